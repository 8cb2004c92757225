"""Checkpoints: the one safe reader and atomic writer, weights cleanup and loading into a network.

Training (resume, adaptation, :func:`ts2d_xray.train.load_trained_network`), export
and inference all read checkpoints with :func:`read_checkpoint`:

* Checkpoints load with ``torch.load(weights_only=True)``, which unpickles tensors and
  plain data only.  nnU-Net checkpoints also hold numpy scalars (its training log) and
  dtypes; those reconstruct from bytes without running code and are allowed
  (:data:`SAFE_NUMPY_GLOBALS`).  A checkpoint holding other Python objects cannot be
  loaded this way; ``trust=True`` loads it with ``weights_only=False``, which can run
  code from the file, so only for a model from a trusted source.  Checkpoints that
  :mod:`ts2d_xray.train` writes hold tensors and plain Python values only.

Output channels: our models have one sigmoid output per structure.  TS2D's multi-label
fork has K + 1, channel 0 being background.  Inference of a published TS2D model keeps
all K + 1 (``keep_background=True``), since the fork's rule needs the background
(:mod:`ts2d_xray.nnunet.exact`); otherwise :func:`load_network` cuts channel 0 from the
segmentation heads (:data:`~ts2d_xray.nnunet.network.SEG_LAYER`) at load, so the
network computes exactly the K structure logits.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import atomic_paths, brief
from ts2d_xray.nnunet.network import SEG_LAYER, build_network

__all__ = [
    "SAFE_NUMPY_GLOBALS",
    "drop_background",
    "load_network",
    "load_weights",
    "network_weights",
    "read_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

#: Globals allowed in ``weights_only`` checkpoints besides torch's own: numpy scalars
#: and dtypes (nnU-Net's training log stores ``np.float64`` values).
SAFE_NUMPY_GLOBALS = re.compile(r"numpy(\._core|\.core)?\.multiarray\.scalar|numpy\.dtype|numpy\.dtypes\.\w+DType")
#: Prefixes that wrappers add to parameter names (``torch.compile``, DistributedDataParallel).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def read_checkpoint(path: str | PathLike, *, trust: bool = False) -> dict:
    """Load a checkpoint (CPU tensors, memory-mapped) with ``weights_only=True`` unless ``trust``.

    Raises:
        InputError: A missing, corrupted or truncated file, or (without ``trust``) one
            holding Python objects beyond tensors, plain data and numpy scalars.
    """
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        unsafe = get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # torch raises many types (RuntimeError, ValueError, IndexError) on bad files
        raise InputError(path, f"corrupted or unreadable checkpoint ({brief(err)})") from None
    allowed = [_numpy_global(name) for name in unsafe if SAFE_NUMPY_GLOBALS.fullmatch(name)]
    if np.dtype in allowed:  # a pickled dtype is rebuilt through its DType class, which the scan does not list
        allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    others = [name for name in unsafe if not SAFE_NUMPY_GLOBALS.fullmatch(name)]
    if others and not trust:
        raise InputError(path, f"the checkpoint holds Python objects ({', '.join(sorted(others)[:4])}) that "
                               "torch.load(weights_only=True) refuses; loading it anyway can run code from the "
                               "file: pass trust_checkpoint=True (--trust-checkpoint) only for a trusted model")
    # Memory-mapped: tensors nobody uses (the optimiser state of a training checkpoint) are never read.
    mmap = zipfile.is_zipfile(path)
    try:
        if others:
            log.warning("%s: loading with weights_only=False (trusted by the caller)", path)
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            with safe_globals([a for a in allowed if a is not None]):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # corrupt tensor data surfaces here, with varied types
        raise InputError(path, f"corrupted or unreadable checkpoint ({brief(err)})") from None
    if not isinstance(checkpoint, dict):
        raise InputError(path, f"expected a checkpoint dict, found {type(checkpoint).__name__}")
    return checkpoint


def _numpy_global(name: str) -> Callable[..., Any] | type | None:
    """The numpy object a safe global of a checkpoint names (None for an unknown one)."""
    module, _, attr = name.rpartition(".")
    if attr == "scalar":
        from numpy._core.multiarray import scalar

        return scalar
    if module == "numpy.dtypes":
        return getattr(np.dtypes, attr, None)
    return np.dtype if name == "numpy.dtype" else None


def save_checkpoint(path: str | PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically (a killed writer leaves the previous file intact); returns its path.

    Serialised in memory first: torch's own file writer reports a full disk as a bare
    RuntimeError, a plain write as an OutputError naming the file.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    with atomic_paths(path) as (temp,):
        temp.write_bytes(buffer.getbuffer())
    return path


def network_weights(checkpoint: Mapping[str, Any], path: Path | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint (its ``network_weights``, or a bare state dict), wrapper prefixes removed.

    Raises:
        InputError: Naming ``path``, when there is no non-empty state dict of tensors.
    """
    weights = checkpoint["network_weights"] if "network_weights" in checkpoint else checkpoint
    if not isinstance(weights, Mapping) or not weights or not all(torch.is_tensor(v) for v in weights.values()):
        raise InputError(path, "no 'network_weights' (a state dict of tensors) in the checkpoint")
    out = {}
    for key, value in weights.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def drop_background(weights: Mapping[str, torch.Tensor], n_structures: int,
                    path: Path | None = None) -> tuple[dict[str, torch.Tensor], bool]:
    """Cut output channel 0 from the segmentation heads when there are K + 1 outputs.

    Returns:
        ``(weights, dropped)``: the state dict for K outputs, and whether a channel was cut.

    Raises:
        InputError: No segmentation head, or another number of outputs than K or K + 1.
    """
    seg = {k: v for k, v in weights.items() if SEG_LAYER.search(k)}
    if not seg:
        raise InputError(path, "no segmentation layer (seg_layers.N) in the weights")
    last = max(seg, key=lambda k: (int(SEG_LAYER.search(k).group(2)), k.endswith("weight")))
    n_out = int(seg[last].shape[0])
    if n_out == n_structures:
        return dict(weights), False
    if n_out != n_structures + 1:
        raise InputError(path, f"the network has {n_out} outputs but dataset.json lists {n_structures} structures "
                               f"(expected {n_structures}, or {n_structures + 1} with background as channel 0)")
    return {k: (v[1:] if k in seg else v) for k, v in weights.items()}, True


def load_network(path: str | PathLike, plans: Mapping[str, Any], in_channels: int, n_structures: int, *,
                 device: str | torch.device = "cpu", trust: bool = False,
                 plans_path: Path | None = None, keep_background: bool = False) -> tuple[torch.nn.Module, dict]:
    """The network of ``plans`` with a checkpoint's weights, in eval mode, without deep supervision.

    The network is built on the meta device and given the checkpoint's tensors: no
    random initialisation of weights that are replaced anyway (half of nnU-Net's model
    start-up time).  A background output channel is cut (see :func:`drop_background`).

    Args:
        path: The checkpoint (read with :func:`read_checkpoint`).
        plans: Its ``plans.json``.
        in_channels: Network inputs.
        n_structures: Structure outputs (K).
        device: Where the network goes.
        trust: See :func:`read_checkpoint`.
        plans_path: The plans file, named by errors about the plans.
        keep_background: Keep all K + 1 outputs of TS2D's fork (background first), as
            its own inference uses them (:mod:`ts2d_xray.nnunet.exact`); the
            checkpoint must then have K + 1 outputs.

    Returns:
        ``(network, checkpoint)``.

    Raises:
        InputError: An unreadable checkpoint, or weights that do not fit the plans' network.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, trust=trust)
    weights, dropped = drop_background(network_weights(checkpoint, path), n_structures, path)
    if keep_background and not dropped:
        raise InputError(path, f"a TS2D (multi-label fork) model needs {n_structures + 1} outputs, background first; "
                               f"the network has {n_structures}")
    if keep_background:
        weights = network_weights(checkpoint, path)
    elif dropped:
        log.info("%s: dropped background output channel 0", path)
    n_out = n_structures + 1 if keep_background else n_structures
    network = build_network(plans, in_channels, n_out, path=plans_path, device="meta")
    try:
        network.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as err:
        raise InputError(path, f"the weights do not fit the network of plans.json ({brief(err)})") from None
    return network.to(device).eval(), checkpoint


def load_weights(network: torch.nn.Module, weights: Mapping[str, Any]) -> list[str]:
    """Load the tensors of ``weights`` whose name and shape match ``network``'s; return the others.

    ``weights`` is a state dict or a checkpoint (its ``network_weights``).  Tensors of
    another shape (e.g. the first convolution for another channel count, or the
    segmentation heads for other structures) keep their initialisation.

    Raises:
        ValueError: Not a single tensor matches (weights of another network).
    """
    if "network_weights" in weights:
        weights = weights["network_weights"]
    own = network.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise ValueError("initial_weights: no tensor matches the network's names and shapes (another architecture?)")
    network.load_state_dict(matched, strict=False)
    return sorted(set(own) - set(matched))
