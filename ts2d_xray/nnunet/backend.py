"""Network forward backends for inference: the torch network, or an ONNX Runtime session of it.

Inference calls each network as ``network(x)``: an ``(B, C, H, W)`` float32 tensor in,
``(B, K, H, W)`` float32 logits out (:mod:`.predict`, :mod:`.exact`).  A backend
decides what that callable is:

* ``torch``: the ``torch.nn.Module`` itself (on a CPU in float32 with instance norms
  computed as group norms, :func:`~ts2d_xray.nnunet.network.speed_up_for_cpu`; on
  CUDA under float16 autocast).
* ``onnx``: an :class:`OnnxNetwork`, an ONNX Runtime session on its CPU execution
  provider running the same network, exported once (:func:`onnx_network`).
* ``auto`` (:func:`resolve_backend`): ``onnx`` on a CPU when ``onnxruntime`` and
  ``onnx`` are installed (``pip install 'ts2d-xray[onnx]'``), else ``torch``.

Export and cache: the float32 network is exported with torch's ONNX exporter (opset
:data:`OPSET`) with dynamic batch, row and column axes, so one file serves the
whole-image, sliding-window and full-patch paths.  Instance norms are exported as
plain operations (:func:`_stable_instance_norm`), not as ONNX
``InstanceNormalization``: ONNX Runtime's CPU kernels for it and for a mean over a
whole 512 x 512 plane sum in one long float32 run, which in the full-patch padding
(a large constant area) is off by about 1e-4 of the value per norm and 8e-3 in the
logits of a TS2D-size network; means taken row by row, then over the rows, keep the
logits within 1e-4 of torch's (measured against a float64 forward pass:
torch 3.5e-5, this export 5.2e-5).  The file is
``<cache>/<key>.onnx``; the key (:func:`export_key`) is a SHA-256 of the checkpoint's
SHA-256, the architecture from ``plans.json``, the channel counts and
:data:`EXPORT_VERSION`, so changed weights make a new export and an unchanged model
reuses it.  It is written atomically (:func:`ts2d_xray.io.files.atomic_paths`).

Sessions (:func:`session_options`): all graph optimisations (``ORT_ENABLE_ALL``:
constant folding, fusions, the blocked NCHWc convolution layout), sequential
execution, and as many intra-op threads as torch uses (``torch.get_num_threads()``,
so ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` steer both backends).

This module imports neither torch nor ONNX Runtime until it needs them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ts2d_xray.io.files import atomic_paths, brief

if TYPE_CHECKING:
    import onnxruntime
    import torch

__all__ = [
    "BACKENDS",
    "EXPORT_VERSION",
    "OnnxNetwork",
    "cached_exports",
    "export_key",
    "export_onnx",
    "network_device",
    "onnx_available",
    "onnx_network",
    "parameter_count",
    "resolve_backend",
    "session_options",
]

log = logging.getLogger(__name__)

#: Backend names a caller may ask for.
BACKENDS = ("auto", "torch", "onnx")
#: ONNX opset of the exports (InstanceNormalization, ConvTranspose, LeakyRelu: all in opset 17).
OPSET = 17
#: Bumped whenever the export changes, so older cached files are no longer used.
EXPORT_VERSION = 1
#: The graph's input and output names.
INPUT, OUTPUT = "image", "logits"
_INSTALL = "pip install 'ts2d-xray[onnx]'"


def onnx_available() -> bool:
    """True when ONNX Runtime and the ``onnx`` package (which torch's exporter needs) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_backend(name: str, device: torch.device) -> str:
    """``"torch"`` or ``"onnx"`` for a backend name on a device.

    Raises:
        ValueError: An unknown name; ``onnx`` on a device other than the CPU, or
            without ONNX Runtime installed (the message says how to install it).
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    if name == "onnx" and device.type != "cpu":
        raise ValueError(f"backend 'onnx' runs on the CPU (ONNX Runtime's CPU execution provider), not on "
                         f"{device}; use --device cpu, or --backend torch")
    if name == "onnx" and not onnx_available():
        missing = [n for n in ("onnxruntime", "onnx") if importlib.util.find_spec(n) is None]
        raise ValueError(f"backend 'onnx' needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         f"not installed: {_INSTALL} (or use --backend torch)")
    return name


def export_key(checksum: str, architecture: Mapping[str, Any], in_channels: int, out_channels: int) -> str:
    """The cache key of an export: SHA-256 (hex) of the weights' checksum and everything else the graph depends on."""
    described = json.dumps({"weights": checksum, "architecture": architecture, "in": int(in_channels),
                            "out": int(out_channels), "version": EXPORT_VERSION, "opset": OPSET}, sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()


def session_options(threads: int | None = None) -> onnxruntime.SessionOptions:
    """ONNX Runtime session options: all graph optimisations, sequential, ``threads`` intra-op threads
    that sleep rather than spin between runs.

    ``threads`` defaults to ``torch.get_num_threads()``.
    """
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the optimiser's notes are not for users
    # Spinning threads keep the cores busy after each run, where torch's and numpy's work
    # (blending, resampling, thresholding) then waits for them: 10-20 % of a CT's time here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxNetwork:
    """An ONNX Runtime session called like the torch network it was exported from.

    ``network(x)`` takes an ``(B, C, H, W)`` float32 CPU tensor and returns the
    ``(B, K, H, W)`` float32 logits as a CPU tensor.

    Attributes:
        session: The ``onnxruntime.InferenceSession``.
        path: The exported file.
        n_parameters: The torch network's parameter count (for descriptions).
    """

    def __init__(self, session: onnxruntime.InferenceSession, path: Path, n_parameters: int) -> None:
        self.session, self.path, self.n_parameters = session, Path(path), int(n_parameters)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: array})[0])

    def __repr__(self) -> str:
        return f"OnnxNetwork({self.path.name}, {self.n_parameters / 1e6:.1f} M parameters)"


def network_device(network: Any) -> torch.device:
    """The device a network computes on: its parameters' for a torch module, the CPU for an :class:`OnnxNetwork`."""
    import torch

    if isinstance(network, OnnxNetwork):
        return torch.device("cpu")
    return next(network.parameters()).device


def parameter_count(network: Any) -> int:
    """Number of weights of a torch module or of the network an :class:`OnnxNetwork` was exported from."""
    if isinstance(network, OnnxNetwork):
        return network.n_parameters
    return sum(p.numel() for p in network.parameters())


def _stable_instance_norm(network: torch.nn.Module) -> torch.nn.Module:
    """Swap stateless ``InstanceNorm2d`` layers for :class:`_ExportInstanceNorm` (in place, for export only)."""
    from ts2d_xray.nnunet.network import replace_instance_norms

    return replace_instance_norms(network, _export_norm)


def _export_norm(norm: torch.nn.InstanceNorm2d) -> torch.nn.Module:
    """The instance norm as mean, variance and scale operations, means by rows then columns (see module doc)."""
    import torch

    class _ExportInstanceNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.eps = float(norm.eps)
            # Plain tensors: exported as constants (a norm reachable under two names keeps one copy).
            shape = (1, -1, 1, 1)
            self.weight = None if norm.weight is None else norm.weight.detach().float().reshape(shape).clone()
            self.bias = None if norm.bias is None else norm.bias.detach().float().reshape(shape).clone()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            centred = x - x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
            scale = torch.rsqrt((centred * centred).mean(dim=3, keepdim=True).mean(dim=2, keepdim=True) + self.eps)
            if self.weight is not None:
                scale = scale * self.weight
            out = centred * scale
            return out if self.bias is None else out + self.bias

    return _ExportInstanceNorm()


def export_onnx(network: torch.nn.Module, in_channels: int, example_size: Sequence[int], path: Path) -> Path:
    """Export a torch network (float32, eval mode) to ONNX at ``path``, atomically.

    Its instance norms are replaced for the export (:func:`_stable_instance_norm`): do
    not run the torch network afterwards.

    Args:
        network: The network, outputs ``(B, K, H, W)`` (no deep supervision).
        in_channels: Its input channels.
        example_size: ``(H, W)`` of the tracing input (multiples of the stride
            product); batch, rows and columns are dynamic in the graph.
        path: Where the ``.onnx`` file goes.

    Raises:
        ValueError: The ``onnx`` package is missing (torch's exporter needs it).
        OutputError: The file cannot be written.
    """
    import torch

    if importlib.util.find_spec("onnx") is None:
        raise ValueError(f"exporting a network to ONNX needs the onnx package: {_INSTALL}")
    example = torch.zeros((1, int(in_channels), *map(int, example_size)), dtype=torch.float32)
    axes = {0: "batch", 2: "rows", 3: "columns"}
    with atomic_paths(path) as (temp,), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on instance norm's training flag and deprecation
        torch.onnx.export(_stable_instance_norm(network.float().eval()), (example,), str(temp), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: axes, OUTPUT: axes}, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    return path


def _session(path: Path, threads: int | None) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def onnx_network(network: torch.nn.Module, in_channels: int, example_size: Sequence[int], key: str, cache: Path,
                 *, threads: int | None = None) -> OnnxNetwork:
    """The :class:`OnnxNetwork` of a loaded torch network, exported into ``cache`` unless ``<key>.onnx`` is there.

    A cached file that ONNX Runtime cannot open (a truncated or foreign file) is
    exported again, with a warning.  A cache folder that cannot be written gives an
    export held in memory only, with a warning (it is exported again next time).
    """
    from ts2d_xray.errors import OutputError

    path = Path(cache) / f"{key}.onnx"
    n_parameters = parameter_count(network)
    if path.is_file():
        try:
            return OnnxNetwork(_session(path, threads), path, n_parameters)
        except Exception as err:  # ORT raises its own types for unreadable graphs
            log.warning("%s: unusable cached ONNX export (%s); exporting again", path, brief(err))
    try:
        export_onnx(network, in_channels, example_size, path)
    except OutputError as err:
        log.warning("%s; the ONNX export is kept in memory only", err)
        return _in_memory(network, in_channels, example_size, path, threads, n_parameters)
    log.info("exported %s to %s", type(network).__name__, path)
    return OnnxNetwork(_session(path, threads), path, n_parameters)


def _in_memory(network: torch.nn.Module, in_channels: int, example_size: Sequence[int], path: Path,
               threads: int | None, n_parameters: int) -> OnnxNetwork:
    """An export into a temporary folder, opened and deleted at once (a cache that cannot be written)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ts2d-xray-onnx-") as tmp:
        temp = export_onnx(network, in_channels, example_size, Path(tmp) / path.name)
        return OnnxNetwork(_session(temp, threads), path, n_parameters)


def cached_exports(cache: Path) -> Iterable[Path]:
    """The ``.onnx`` files in a cache folder (for inspection and tests)."""
    return sorted(Path(cache).glob("*.onnx"))
