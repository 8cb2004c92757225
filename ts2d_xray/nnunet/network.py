"""Build a group's network from ``plans.json`` and load its weights, without importing a trainer.

nnU-Net's own predictor looks the trainer class up by the name stored in the checkpoint,
so a model trained with a trainer it does not know (TS2D's
``nnUNetTrainer_4000epochs_Batch2_NoMirroring``, our ``Ts2dMultiLabelTrainer``) cannot
be loaded.  Here the network comes from ``plans.json`` alone
(``configurations["2d"]["architecture"]``: ``network_class_name``, ``arch_kwargs``,
``_kw_requires_import``, built by nnU-Net's ``get_network_from_plans``), and the
checkpoint only supplies the weights (``network_weights``).

Safety:

* ``network_class_name`` must name a class of ``dynamic_network_architectures``, and
  every ``_kw_requires_import`` value a ``torch.nn`` class: plans cannot make us import
  anything else.
* Checkpoints load with ``torch.load(weights_only=True)``, which unpickles tensors and
  plain data only.  nnU-Net checkpoints also hold numpy scalars (its training log) and
  dtypes; those reconstruct from bytes without running code and are allowed
  (:data:`SAFE_NUMPY_GLOBALS`).  A checkpoint holding other Python objects cannot be
  loaded this way; ``trust=True`` loads it with ``weights_only=False``, which can run
  code from the file, so only for a model from a trusted source.

Output channels: our models have one sigmoid output per structure.  TS2D's multi-label
fork has K + 1, channel 0 being background; that channel is cut from the final
(1x1) segmentation layers at load, so the network computes exactly the K structure
logits.
"""

from __future__ import annotations

import contextlib
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import brief
from ts2d_xray.segment.manifest import GroupSpec

__all__ = ["GroupNetwork", "SAFE_NUMPY_GLOBALS", "build_network", "load_group", "read_checkpoint", "speed_up_for_cpu"]

log = logging.getLogger(__name__)

#: Module prefix every ``network_class_name`` must have.
ALLOWED_NETWORK_PREFIX = "dynamic_network_architectures.architectures."
#: Module prefix every class named in ``_kw_requires_import`` must have.
ALLOWED_IMPORT_PREFIX = "torch.nn."
#: Globals allowed in ``weights_only`` checkpoints besides torch's own: numpy scalars
#: and dtypes (nnU-Net's training log stores ``np.float64`` values).
SAFE_NUMPY_GLOBALS = re.compile(r"numpy(\._core|\.core)?\.multiarray\.scalar|numpy\.dtype|numpy\.dtypes\.\w+DType")
_SEG_LAYER = re.compile(r"(^|\.)seg_layers\.(\d+)\.(weight|bias)$")


@dataclass(eq=False)
class GroupNetwork:
    """A loaded group model, ready to predict.

    Attributes:
        name: Group name.
        structures: Output structures, in output order (K).
        networks: One network per fold (eval mode, on the device); logits are averaged.
        spacing: ``(row, column)`` pixel size the network works at, in mm.
        patch_size: ``(H, W)`` training patch in pixels.
        divisor: ``(H, W)``: input sizes must be multiples of these (product of strides).
        normalization: Per image channel, ``(scheme, intensity properties)`` with
            nnU-Net's scheme names (``CTNormalization``, ``ZScoreNormalization``, ...).
        channel_source: For each network input, the image channel it reads.
        mirror_axes: Axes the checkpoint allows for mirroring at inference (nnU-Net's
            ``inference_allowed_mirroring_axes``, in (H, W) axes), or ().
    """

    name: str
    structures: tuple[str, ...]
    networks: list[torch.nn.Module]
    spacing: tuple[float, float]
    patch_size: tuple[int, int]
    divisor: tuple[int, int]
    normalization: tuple[tuple[str, Mapping[str, float]], ...]
    channel_source: tuple[int, ...]
    mirror_axes: tuple[int, ...] = ()


class _InstanceNormAsGroupNorm(torch.nn.Module):
    """``InstanceNorm2d`` computed as a group norm with one group per channel (the same formula).

    PyTorch's CPU instance norm reshapes the batch into a batch norm and repeats its
    weights per sample; ``group_norm`` has a native kernel and runs the whole network
    about 20 % faster on CPU.  Inference only (no running statistics).
    """

    def __init__(self, norm: torch.nn.InstanceNorm2d):
        super().__init__()
        self.eps = norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


def speed_up_for_cpu(network: torch.nn.Module) -> torch.nn.Module:
    """Swap stateless ``InstanceNorm2d`` layers for the equivalent, faster group norm (in place)."""
    swaps = [(parent, name, child) for parent in network.modules() for name, child in list(parent.named_children())
             if isinstance(child, torch.nn.InstanceNorm2d) and not child.track_running_stats]
    replaced: dict[int, torch.nn.Module] = {}
    for parent, name, child in swaps:  # a norm can be reachable twice (e.g. .norm and .all_modules[1])
        setattr(parent, name, replaced.setdefault(id(child), _InstanceNormAsGroupNorm(child)))
    return network


def _locate(name: str, prefix: str, what: str, path: Path):
    import pydoc

    if not isinstance(name, str) or not name.startswith(prefix):
        raise InputError(path, f"{what} {name!r} is not allowed: it must be a class under {prefix}*")
    located = pydoc.locate(name)
    if located is None:
        raise InputError(path, f"{what} {name!r} cannot be found (is the matching package version installed?)")
    return located


def build_network(plans: Mapping[str, Any], in_channels: int, out_channels: int, *,
                  path: Path | None = None, device: str | torch.device | None = None) -> torch.nn.Module:
    """The 2D network that ``plans.json`` describes, without deep supervision, in eval mode.

    Only classes under :data:`ALLOWED_NETWORK_PREFIX` and, for ``_kw_requires_import``,
    :data:`ALLOWED_IMPORT_PREFIX` are imported; anything else raises InputError.
    ``device="meta"`` builds it without memory or random initialisation, for
    ``load_state_dict(..., assign=True)``.
    """
    try:
        arch = plans["configurations"]["2d"]["architecture"]
        class_name, kwargs, to_import = arch["network_class_name"], dict(arch["arch_kwargs"]), arch["_kw_requires_import"]
    except (KeyError, TypeError) as err:
        raise InputError(path, f"no 2D architecture in plans.json (missing {err})") from None
    network_class = _locate(class_name, ALLOWED_NETWORK_PREFIX, "network_class_name", path)
    for key in to_import:
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(kwargs[key], ALLOWED_IMPORT_PREFIX, f"arch_kwargs[{key!r}]", path)
    kwargs["deep_supervision"] = False
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            network = network_class(input_channels=in_channels, num_classes=out_channels, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise InputError(path, f"cannot build {class_name.rsplit('.', 1)[-1]} from plans.json ({err})") from None
    return network.eval()


def read_checkpoint(path: str | Path, *, trust: bool = False) -> dict:
    """Load a checkpoint (CPU tensors) with ``weights_only=True`` unless ``trust``.

    Raises:
        InputError: A corrupted or truncated file, or (without ``trust``) one holding
            Python objects beyond tensors, plain data and numpy scalars.
    """
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    path = Path(path)
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


def _numpy_global(name: str):
    module, _, attr = name.rpartition(".")
    if attr == "scalar":
        from numpy._core.multiarray import scalar

        return scalar
    if module == "numpy.dtypes":
        return getattr(np.dtypes, attr, None)
    return np.dtype if name == "numpy.dtype" else None


def _state_dict(checkpoint: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    weights = checkpoint["network_weights"] if "network_weights" in checkpoint else checkpoint  # or a bare state dict
    if not isinstance(weights, Mapping) or not weights or not all(torch.is_tensor(v) for v in weights.values()):
        raise InputError(path, "no 'network_weights' (a state dict of tensors) in the checkpoint")
    out = {}
    for key, value in weights.items():
        for prefix in ("_orig_mod.", "module."):  # saved from torch.compile / DDP wrappers
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _drop_background(weights: dict[str, torch.Tensor], n_structures: int, path: Path) -> tuple[dict, bool]:
    """Cut output channel 0 from the segmentation layers when there are K + 1 outputs."""
    seg = {k: v for k, v in weights.items() if _SEG_LAYER.search(k)}
    if not seg:
        raise InputError(path, "no segmentation layer (seg_layers.N) in the weights")
    last = max(seg, key=lambda k: (int(_SEG_LAYER.search(k).group(2)), k.endswith("weight")))
    n_out = int(seg[last].shape[0])
    if n_out == n_structures:
        return weights, False
    if n_out != n_structures + 1:
        raise InputError(path, f"the network has {n_out} outputs but dataset.json lists {n_structures} structures "
                               f"(expected {n_structures}, or {n_structures + 1} with background as channel 0)")
    return {k: (v[1:] if k in seg else v) for k, v in weights.items()}, True


def load_group(root: Path, spec: GroupSpec, *, device: torch.device, trust: bool = False) -> GroupNetwork:
    """Build and load one group model of a bundle onto ``device``."""
    from ts2d_xray.segment.manifest import read_json

    folder = root / spec.path
    plans, dataset = read_json(folder / "plans.json"), read_json(folder / "dataset.json")
    try:
        config = plans["configurations"]["2d"]
        ours = plans.get("ts2d") if isinstance(plans.get("ts2d"), dict) else {}
        schemes = list(config["normalization_schemes"])
        n_channels = len(dataset.get("channel_names", {})) or len(schemes)
        channel_source = tuple(int(c) for c in ours.get("channel_source", range(n_channels)))
        properties = plans.get("foreground_intensity_properties_per_channel", {})
        normalization = tuple((str(s), dict(properties.get(str(c), {}))) for c, s in enumerate(schemes))
        arch = config["architecture"]["arch_kwargs"]
        strides = np.asarray(arch["strides"], dtype=int).reshape(len(arch["strides"]), -1)
        divisor = tuple(int(d) for d in np.prod(strides, axis=0))
        spacing = tuple(float(s) for s in config["spacing"][-2:])
        patch_size = tuple(int(p) for p in config["patch_size"][-2:])
    except (KeyError, TypeError, ValueError) as err:
        problem = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(folder / "plans.json", f"not a usable 2D nnU-Net plan ({problem})") from None
    if len(schemes) != n_channels:
        raise InputError(folder / "plans.json", f"{len(schemes)} normalization schemes for {n_channels} channels")
    if not channel_source or max(channel_source) >= n_channels:
        raise InputError(folder / "plans.json", f"channel_source {list(channel_source)} for {n_channels} channels")
    networks, mirror = [], ()
    for f, rel in zip(spec.folds, spec.checkpoints()):
        path = root / rel
        checkpoint = read_checkpoint(path, trust=trust)
        weights, dropped = _drop_background(_state_dict(checkpoint, path), len(spec.structures), path)
        if dropped:
            log.info("%s: dropped background output channel 0", path)
        # Built on the meta device and given the checkpoint's tensors: no random initialisation
        # of weights that are replaced anyway (half of nnU-Net's model start-up time).
        network = build_network(plans, len(channel_source), len(spec.structures), path=folder / "plans.json",
                                device="meta")
        try:
            network.load_state_dict(weights, strict=True, assign=True)
        except RuntimeError as err:
            raise InputError(path, f"the weights do not fit the network of plans.json ({brief(err)})") from None
        if device.type == "cpu":
            network.float()  # half-precision weights would run slowly (or not at all) on CPUs
            speed_up_for_cpu(network)
        networks.append(network.to(device).eval())
        mirror = tuple(int(a) for a in (checkpoint.get("inference_allowed_mirroring_axes") or ()))
    return GroupNetwork(
        name=spec.name, structures=spec.structures, networks=networks,
        spacing=spacing, patch_size=patch_size, divisor=divisor[-2:], normalization=normalization, channel_source=channel_source, mirror_axes=mirror,
    )


def describe(groups: Sequence[GroupNetwork]) -> str:
    """One line per group: outputs, spacing, patch and parameter count."""
    lines = []
    for g in groups:
        params = sum(p.numel() for p in g.networks[0].parameters())
        lines.append(f"{g.name}: {len(g.structures)} structures, {g.spacing[0]:g}x{g.spacing[1]:g} mm, "
                     f"patch {g.patch_size[0]}x{g.patch_size[1]}, {params / 1e6:.1f} M parameters x {len(g.networks)} fold(s)")
    return "\n".join(lines)
