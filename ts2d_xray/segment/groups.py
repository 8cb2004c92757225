"""A bundle's group models loaded for inference, on top of the nnU-Net runtime (:mod:`ts2d_xray.nnunet`).

:func:`load_group` reads one group of a bundle (its ``plans.json``, ``dataset.json``
and one checkpoint per fold) into a :class:`GroupNetwork`; :func:`predict_group` runs
it on a prepared image (sliding windows, folds averaged,
:func:`ts2d_xray.nnunet.predict.sliding_window_logits`).  On a CPU the networks run in
float32 with their instance norms computed as group norms
(:func:`~ts2d_xray.nnunet.network.speed_up_for_cpu`).

A group in TS2D's published layout (:func:`ts2d_xray.nnunet.exact.is_published`) is
loaded with all K + 1 outputs and run by :func:`predict_exact`, nnU-Net's own steps
(:mod:`ts2d_xray.nnunet.exact`), so that it gives TS2D's masks; TS2D's ``model.json``
(two folders above the nnU-Net folder, ``<model>_<group>/r<NNN>/model.json``) may set
the window step (``nnu.predict.stepsize``) and switch mirroring off
(``nnu.predict.augment``), as it does for TS2D.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json
from ts2d_xray.nnunet.backend import OnnxNetwork, export_key, onnx_network, parameter_count, resolve_backend
from ts2d_xray.nnunet.checkpoint import load_network
from ts2d_xray.nnunet.exact import (ExactPlan, Preprocessed, exact_plan, is_published, multilabel_masks, native_logits,
                                    predict_logits, preprocess)
from ts2d_xray.nnunet.layout import CONFIGURATION, DATASET_FILE, PLANS_FILE
from ts2d_xray.nnunet.network import input_divisor, speed_up_for_cpu
from ts2d_xray.nnunet.normalize import plans_normalization
from ts2d_xray.nnunet.predict import DEFAULT_STEP, sliding_window_logits
from ts2d_xray.segment.manifest import GroupSpec, sha256_file

#: Probability maps are brought back to the input grid this many bytes at a time.
_CHUNK_BYTES = 256 * 2**20

__all__ = ["GroupNetwork", "add_masks", "add_scores", "channel_order", "describe", "load_group", "predict_exact", "predict_group"]

#: TS2D's model description, beside the data set folder of a published zip.
TS2D_MODEL_FILE = "model.json"


@dataclass(eq=False)
class GroupNetwork:
    """A loaded group model, ready to predict.

    Attributes:
        name: Group name.
        structures: Output structures, in output order (K).
        networks: One network per fold (eval mode, on the device; or its ONNX Runtime
            session, :class:`~ts2d_xray.nnunet.backend.OnnxNetwork`); logits are averaged.
        spacing: ``(row, column)`` pixel size the network works at, in mm.
        patch_size: ``(H, W)`` training patch in pixels.
        divisor: ``(H, W)``: input sizes must be multiples of these (product of strides).
        normalization: Per image channel, ``(scheme, intensity properties)`` with
            nnU-Net's scheme names (``CTNormalization``, ``ZScoreNormalization``, ...).
        channel_source: For each network input, the image channel it reads.
        mirror_axes: Axes the checkpoint allows for mirroring at inference (nnU-Net's
            ``inference_allowed_mirroring_axes``, in (H, W) axes), or ().
        exact: For a model in TS2D's published layout, its plan for nnU-Net's own
            steps (:mod:`ts2d_xray.nnunet.exact`); the networks then have K + 1 outputs.
        channel_names: ``dataset.json["channel_names"]`` in channel order (TS2D's
            projection mode of each channel).
        step: Window step from TS2D's ``model.json``, or None (the caller's).
        mirror: Whether TS2D mirrors (``nnu.predict.augment``, default on) along
            ``mirror_axes``.
    """

    name: str
    structures: tuple[str, ...]
    networks: list[torch.nn.Module | OnnxNetwork]
    spacing: tuple[float, float]
    patch_size: tuple[int, int]
    divisor: tuple[int, int]
    normalization: tuple[tuple[str, Mapping[str, float]], ...]
    channel_source: tuple[int, ...]
    mirror_axes: tuple[int, ...] = ()
    exact: ExactPlan | None = None
    channel_names: tuple[str, ...] = ()
    step: float | None = None
    mirror: bool = True


def _group_plan(plans: Mapping[str, Any], dataset: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The :class:`GroupNetwork` fields that ``plans.json`` and ``dataset.json`` give (InputError naming ``path``)."""
    try:
        config = plans["configurations"][CONFIGURATION]
        ours = plans.get("ts2d") if isinstance(plans.get("ts2d"), dict) else {}
        normalization = plans_normalization(plans)
        n_channels = len(dataset.get("channel_names", {})) or len(normalization)
        fields = {
            "normalization": normalization,
            "channel_source": tuple(int(c) for c in ours.get("channel_source", range(n_channels))),
            "divisor": input_divisor(plans),
            "spacing": tuple(float(s) for s in config["spacing"][-2:]),
            "patch_size": tuple(int(p) for p in config["patch_size"][-2:]),
        }
    except (KeyError, TypeError, ValueError) as err:
        problem = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(path, f"not a usable 2D nnU-Net plan ({problem})") from None
    if len(normalization) != n_channels:
        raise InputError(path, f"{len(normalization)} normalization schemes for {n_channels} channels")
    source = fields["channel_source"]
    if not source or max(source) >= n_channels:
        raise InputError(path, f"channel_source {list(source)} for {n_channels} channels")
    return fields


def load_group(root: Path, spec: GroupSpec, *, device: torch.device, trust: bool = False, backend: str = "torch",
               checksums: Mapping[str, str] | None = None) -> GroupNetwork:
    """Build and load one group model of a bundle onto ``device``.

    ``backend`` (:mod:`ts2d_xray.nnunet.backend`): ``torch`` keeps the torch networks;
    ``onnx`` replaces each by its ONNX Runtime session, exported once into the model
    cache (``$TS2D_XRAY_HOME/onnx``) under a key made from the checkpoint's SHA-256
    (``checksums``, relative path -> hex, as in the manifest; hashed here when absent);
    ``auto`` picks one (:func:`~ts2d_xray.nnunet.backend.resolve_backend`).

    Raises:
        InputError: Naming the file: unreadable or unusable plans, a checkpoint that
            :func:`~ts2d_xray.nnunet.checkpoint.read_checkpoint` refuses, weights that
            do not fit the plans or the group's structures.
    """
    folder = root / spec.path
    plans_path = folder / PLANS_FILE
    plans, dataset = read_json(plans_path), read_json(folder / DATASET_FILE)
    fields = _group_plan(plans, dataset, plans_path)
    published = is_published(plans, dataset)
    if published:
        fields.update(_ts2d_fields(folder, root, plans, dataset, plans_path))
    networks, mirror = [], ()
    backend = resolve_backend(backend, device)
    for rel in spec.checkpoints():
        network, checkpoint = load_network(root / rel, plans, len(fields["channel_source"]), len(spec.structures),
                                           device="cpu", trust=trust, plans_path=plans_path,
                                           keep_background=published)
        if backend == "onnx":
            checksum = (checksums or {}).get(rel) or sha256_file(root / rel)
            n_out = len(spec.structures) + int(published)
            network = _onnx_network(network, plans, fields, checksum, n_out)
        else:
            if device.type == "cpu":
                network.float()  # half-precision weights would run slowly (or not at all) on CPUs
                speed_up_for_cpu(network)
            network = network.to(device).eval()
        networks.append(network)
        mirror = tuple(int(a) for a in (checkpoint.get("inference_allowed_mirroring_axes") or ()))
    return GroupNetwork(name=spec.name, structures=spec.structures, networks=networks, mirror_axes=mirror, **fields)


def _onnx_network(network: torch.nn.Module, plans: Mapping[str, Any], fields: Mapping[str, Any], checksum: str,
                  n_out: int) -> OnnxNetwork:
    """A loaded group network (``n_out`` outputs) as its ONNX Runtime session, exported into the model cache once."""
    from ts2d_xray.segment.models import model_home

    in_channels = len(fields["channel_source"])
    key = export_key(checksum, plans["configurations"][CONFIGURATION]["architecture"], in_channels, n_out)
    example = [2 * d for d in fields["divisor"]]
    return onnx_network(network.float(), in_channels, example, key, model_home() / "onnx")


def _ts2d_fields(folder: Path, root: Path, plans: Mapping[str, Any], dataset: Mapping[str, Any],
                 plans_path: Path) -> dict[str, Any]:
    """The :class:`GroupNetwork` fields of a published TS2D group: its plan, channel names, ``model.json`` settings."""
    names = dataset.get("channel_names", {})
    fields: dict[str, Any] = {"exact": exact_plan(plans, plans_path),
                              "channel_names": tuple(str(names[k]) for k in sorted(names, key=int))}
    model_json = folder.parent.parent / TS2D_MODEL_FILE
    if folder.parent != root and model_json.is_file():
        param = read_json(model_json, what="TS2D model description").get("param", {})
        if param.get("nnu.predict.stepsize") is not None:
            fields["step"] = float(param["nnu.predict.stepsize"])
        fields["mirror"] = bool(param.get("nnu.predict.augment", True))
    return fields


def predict_exact(group: GroupNetwork, image: np.ndarray, spacing: Sequence[float], *, step: float = DEFAULT_STEP,
                  thresholds: Sequence[float] | None = None,
                  accumulate: torch.dtype = torch.half, exact: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A published TS2D group on a ``(C, H, W)`` image at ``spacing`` (row, column) mm, as TS2D runs it.

    The channels must already be in the group's ``channel_names`` order; ``accumulate``
    is the dtype the windows are blended in (nnU-Net's float16 by default).  With
    ``exact=False`` an image smaller than the patch is padded only to multiples of the
    network's stride (faster; the masks are no longer TS2D's).

    Returns:
        ``(masks, probabilities, logits)`` on the image's own grid: ``(K, H, W)`` bool
        and float32 (0 outside nnU-Net's crop box), and ``(K + 1, h, w)`` logits on the
        crop box (nnU-Net's float16, background first).
    """
    plan = group.exact
    if plan is None:
        raise ValueError(f"group {group.name!r} is not a published TS2D model")
    pre = _preprocessed(image, spacing, plan)
    mirror_axes = group.mirror_axes if group.mirror else ()
    logits = predict_logits(group.networks, pre, plan, step=group.step or step, mirror_axes=mirror_axes,
                            accumulate=accumulate, divisor=None if exact else group.divisor)
    native = native_logits(logits, pre, plan)
    masks, probs = multilabel_masks(native, pre, plan, thresholds)
    return masks, probs, native


#: Per thread, the last image preprocessed for a published group and its result (see :func:`_preprocessed`).
_LAST_PREPROCESSED = threading.local()


def _preprocessed(image: np.ndarray, spacing: Sequence[float], plan: ExactPlan) -> Preprocessed:
    """:func:`~ts2d_xray.nnunet.exact.preprocess`, reused for the next group of the same image and settings.

    TS2D's groups share their plans' spacing, normalisation and resampling, so the five
    groups of a CT would each crop, normalise and spline-resample the same projection;
    the result is a pure function of the image, its spacing and those plan fields, so the
    last one is kept (per thread) and reused when all of them are equal.
    """
    config = plan.configuration
    key = (tuple(map(float, spacing)), plan.spacing, plan.transpose_forward, plan.schemes, plan.use_mask,
           plan.properties, config.get("resampling_fn_data"), config.get("resampling_fn_data_kwargs"))
    last = getattr(_LAST_PREPROCESSED, "entry", None)
    if last is not None and last[0] == key and last[1].shape == image.shape and np.array_equal(last[1], image):
        return last[2]
    pre = preprocess(image, spacing, plan)
    _LAST_PREPROCESSED.entry = (key, np.array(image, copy=True), pre)
    return pre


def predict_group(group: GroupNetwork, image: torch.Tensor, *, step: float = DEFAULT_STEP, batch_size: int = 1,
                  tta: bool = False) -> torch.Tensor:
    """Logits ``(K, H, W)`` float32 of one group for a normalised ``(C_in, H, W)`` image on its device.

    See :func:`ts2d_xray.nnunet.predict.sliding_window_logits`; ``tta`` mirrors along
    the axes the group's checkpoints allow.
    """
    return sliding_window_logits(group.networks, image, group.patch_size, group.divisor, step=step,
                                 batch_size=batch_size, tta=tta, mirror_axes=group.mirror_axes)


def channel_order(group: GroupNetwork, channels: Sequence[str]) -> list[int]:
    """For each input of a published TS2D group, the index of the image channel its name projects (TS2D's order).

    TS2D projects a CT once per ``dataset.json`` channel name, the name being the
    projection mode; ours computes ``mean`` (alias ``avg``) and ``max`` (alias ``mip``).

    Raises:
        InputError: A channel name that is no projection ts2d-xray computes.
    """
    aliases = {"avg": "mean", "mip": "max"}
    order = []
    for name in group.channel_names:
        mode = aliases.get(name.strip().lower(), name.strip().lower())
        if mode not in channels:
            raise InputError(None, f"group {group.name!r} reads a {name!r} projection; ts2d-xray projects "
                                   f"{' and '.join(channels)} only")
        order.append(list(channels).index(mode))
    return order


def describe(groups: Sequence[GroupNetwork]) -> str:
    """One line per group: outputs, spacing, patch and parameter count."""
    lines = []
    for g in groups:
        params = parameter_count(g.networks[0])
        lines.append(f"{g.name}: {len(g.structures)} structures, {g.spacing[0]:g}x{g.spacing[1]:g} mm, "
                     f"patch {g.patch_size[0]}x{g.patch_size[1]}, {params / 1e6:.1f} M parameters x "
                     f"{len(g.networks)} fold(s)")
    return "\n".join(lines)


def add_scores(scores: dict[str, dict], structures: Sequence[str], probs: torch.Tensor,
                inside: torch.Tensor) -> None:
    """Per structure: mean probability inside its mask (``confidence``, None if empty) and the peak.

    A structure predicted by several groups keeps the more confident group's scores.
    """
    n_inside = inside.sum(dim=(1, 2))
    confidence = (probs * inside).sum(dim=(1, 2)) / n_inside.clamp(min=1)
    peak = probs.amax(dim=(1, 2))
    for k, name in enumerate(structures):
        conf = float(confidence[k]) if int(n_inside[k]) else None
        old = scores.get(name)
        if old is None or (conf or 0) > (old["confidence"] or 0):
            scores[name] = {"confidence": None if conf is None else round(conf, 4),
                            "max_probability": round(float(peak[k]), 4)}


def add_masks(masks: np.ndarray, probs: torch.Tensor, thresholds: Sequence[float], rows: Sequence[int]) -> None:
    """Threshold probabilities ``(k, h, w)`` on the output grid into ``masks[rows]`` (a union with earlier groups).

    ``masks`` is ``(K, H, W)`` bool (a view is fine: the Segmenter passes the input's
    grid, oriented).  Upsampling is torch's bilinear (``align_corners=False``) computed
    only where a structure can reach its threshold: an output pixel is a weighted mean
    of its four neighbours at the model's grid, so it can only be at or above the
    threshold inside the box of those that are; empty structures cost nothing.  The
    same masks as upsampling every map whole, without ``K x H x W`` floats.
    Downsampling (a model grid finer than the output) is antialiased, a chunk at a time.
    """
    if not len(rows):
        return
    h, w = masks.shape[1:]
    limits = probs.new_tensor(list(thresholds))[:, None, None]
    if probs.shape[-2:] == (h, w):  # a CT's projection is already on the model's grid
        for k, row in enumerate(rows):
            masks[row] |= (probs[k] >= limits[k]).cpu().numpy()
    elif probs.shape[-2] > h or probs.shape[-1] > w:
        _add_downsampled(masks, probs, limits, rows)
    else:
        _add_upsampled(masks, probs, limits, rows)


def _add_downsampled(masks: np.ndarray, probs: torch.Tensor, limits: torch.Tensor, rows: Sequence[int]) -> None:
    """:func:`add_masks` for probabilities finer than the output: antialiased, chunks bounding the memory."""
    import torch.nn.functional as F

    h, w = masks.shape[1:]
    per_chunk = max(1, _CHUNK_BYTES // (4 * h * w))
    for k0 in range(0, len(rows), per_chunk):
        up = F.interpolate(probs[None, k0:k0 + per_chunk], size=(h, w), mode="bilinear", align_corners=False,
                           antialias=True)[0]
        inside = (up >= limits[k0:k0 + per_chunk]).cpu().numpy()
        for k, row in enumerate(rows[k0:k0 + per_chunk]):
            masks[row] |= inside[k]


@dataclass(frozen=True)
class _Taps:
    """torch's bilinear taps along one axis (``align_corners=False``): neighbours and weights per output index."""

    lo: torch.Tensor
    hi: torch.Tensor
    w_lo: torch.Tensor
    w_hi: torch.Tensor

    @classmethod
    def of(cls, n_in: int, n_out: int, device: torch.device) -> "_Taps":
        # As torch computes them, in float32: source = (i + 0.5) * n_in / n_out - 0.5, at least 0.
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                         np.float32(0))
        lo = src.astype(np.int64)
        hi = lo + (lo < n_in - 1)
        w_hi = np.clip(src - lo.astype(np.float32), 0, 1).astype(np.float32)
        as_tensor = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        return cls(as_tensor(lo), as_tensor(hi), as_tensor(np.float32(1) - w_hi), as_tensor(w_hi))

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Output indices ``[a, b)`` whose neighbours reach the input indices ``first..last``."""
        return (int(torch.searchsorted(self.hi, first, right=False)),
                int(torch.searchsorted(self.lo, last, right=True)))


def _add_upsampled(masks: np.ndarray, probs: torch.Tensor, limits: torch.Tensor, rows: Sequence[int]) -> None:
    """:func:`add_masks` for probabilities coarser than the output: each structure inside its reachable box."""
    h, w = masks.shape[1:]
    ty, tx = _Taps.of(probs.shape[-2], h, probs.device), _Taps.of(probs.shape[-1], w, probs.device)
    inside = probs >= limits
    any_row, any_col = inside.any(dim=2).cpu().numpy(), inside.any(dim=1).cpu().numpy()
    for k, row in enumerate(rows):
        r, c = np.flatnonzero(any_row[k]), np.flatnonzero(any_col[k])
        if not r.size:
            continue
        (a, b), (c0, c1) = ty.span(int(r[0]), int(r[-1])), tx.span(int(c[0]), int(c[-1]))
        first, last = int(ty.lo[a]), int(ty.hi[b - 1])
        band = probs[k, first:last + 1]  # the input rows these output rows read
        across = band[:, tx.lo[c0:c1]] * tx.w_lo[c0:c1] + band[:, tx.hi[c0:c1]] * tx.w_hi[c0:c1]
        up = across[ty.lo[a:b] - first] * ty.w_lo[a:b, None] + across[ty.hi[a:b] - first] * ty.w_hi[a:b, None]
        masks[row, a:b, c0:c1] |= (up >= limits[k]).cpu().numpy()
