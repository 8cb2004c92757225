"""nnU-Net's own 2D inference, step for step, as TS2D 1.2.0 runs published models.

TS2D hands each image to an ``nnUNetPredictor`` of its multi-label fork
(``nnunetv2ml`` 2.6.2).  For models in that layout (:func:`is_published`) this module
does the same steps, with nnU-Net's own functions where they are plain functions (the
installed ``nnunetv2`` has the same code for them):

1. :func:`preprocess` (``DefaultPreprocessor.run_case_npy``): the ``(C, H, W)`` image
   becomes ``(C, 1, H, W)`` (the 2D reader's layout), is transposed by the plans'
   ``transpose_forward``, cropped to the box of its non-zero pixels (holes filled),
   **normalised on its own grid** per channel (the plans' scheme and
   ``use_mask_for_norm``), then **resampled** to the plans' spacing with the plans'
   function and order (order-3 spline, no anti-aliasing, for nnU-Net's planner).
2. :func:`predict_logits` (``predict_sliding_window_return_logits``): zero-padded,
   centred, to **at least the full patch**; windows at nnU-Net's steps; each window's
   logits times the Gaussian importance map, accumulated in **float16** (as nnU-Net
   does on every device), mirrored copies where the checkpoint allows and the caller
   asks; folds summed and divided.
3. :func:`native_logits` (``convert_predicted_logits_to_segmentation_with_correct_shape``):
   logits resampled (the plans' probability function, order 1; for nnU-Net's default
   function the same bilinear interpolation in one torch call, float64, equal to one
   unit in the last place) back to the cropped input grid, then
   :func:`multilabel_masks` applies the fork's rule: sigmoid of all K + 1 outputs, a
   structure where p > 0.5, every structure cleared where the background has p > 0.5;
   outside the crop box nothing.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ts2d_xray.errors import InputError
from ts2d_xray.nnunet.backend import network_device
from ts2d_xray.nnunet.layout import CONFIGURATION
from ts2d_xray.nnunet.normalize import NORMALIZATIONS, normalize
from ts2d_xray.nnunet.predict import Forward

__all__ = [
    "ExactPlan",
    "Preprocessed",
    "exact_plan",
    "is_published",
    "multilabel_masks",
    "native_logits",
    "predict_logits",
    "preprocess",
]

#: nnU-Net's resampling functions a plan may name (they live in nnunetv2.preprocessing.resampling).
_RESAMPLING = ("resample_data_or_seg_to_shape", "resample_torch_fornnunet", "resample_torch_simple")
#: The fork's probability threshold (strictly above) for structures and for the background.
THRESHOLD = 0.5


def is_published(plans: Mapping[str, Any], dataset: Mapping[str, Any]) -> bool:
    """True for a model in TS2D's published layout: the fork's ``multilabel`` data set, none of our metadata."""
    ours = isinstance(plans.get("ts2d"), dict) or "structures" in dataset
    return bool(dataset.get("multilabel", dataset.get("multiclass", False))) and not ours


@dataclass(frozen=True)
class ExactPlan:
    """What nnU-Net reads from ``plans.json`` to run one 2D model.

    Attributes:
        configuration: The plans' ``configurations["2d"]`` (nnU-Net's ConfigurationManager input).
        patch_size: ``(H, W)`` patch in pixels.
        spacing: ``(row, column)`` target pixel size in mm.
        transpose_forward: The plans' axis order ``(z, rows, columns)`` for the network.
        transpose_backward: Its inverse.
        schemes: Per channel, the normalisation scheme.
        use_mask: Per channel, ``use_mask_for_norm``.
        properties: Per channel, the foreground intensity properties.
    """

    configuration: Mapping[str, Any]
    patch_size: tuple[int, int]
    spacing: tuple[float, float]
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    schemes: tuple[str, ...]
    use_mask: tuple[bool, ...]
    properties: tuple[Mapping[str, float], ...]


def exact_plan(plans: Mapping[str, Any], path: Path | None = None) -> ExactPlan:
    """The :class:`ExactPlan` of ``plans.json`` (InputError naming ``path`` for one nnU-Net could not run)."""
    try:
        config = dict(plans["configurations"][CONFIGURATION])
        schemes = tuple(str(s) for s in config["normalization_schemes"])
        use_mask = tuple(bool(u) for u in config.get("use_mask_for_norm", [False] * len(schemes)))
        props = plans.get("foreground_intensity_properties_per_channel", {})
        plan = ExactPlan(config, tuple(int(p) for p in config["patch_size"]), tuple(float(s) for s in config["spacing"]),
                         tuple(int(t) for t in plans.get("transpose_forward", (0, 1, 2))),
                         tuple(int(t) for t in plans.get("transpose_backward", (0, 1, 2))), schemes, use_mask,
                         tuple(dict(props.get(str(c), {})) for c in range(len(schemes))))
        for key in ("resampling_fn_data", "resampling_fn_probabilities"):
            if config[key] not in _RESAMPLING:
                raise ValueError(f"{key} {config[key]!r} is not one of nnU-Net's ({', '.join(_RESAMPLING)})")
    except (KeyError, TypeError, ValueError) as err:
        problem = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise InputError(path, f"not a usable 2D nnU-Net plan ({problem})") from None
    bad = [s for s in plan.schemes if s not in NORMALIZATIONS]
    if bad or len(plan.patch_size) != 2 or len(plan.spacing) != 2 or len(plan.use_mask) != len(schemes):
        raise InputError(path, f"not a usable 2D nnU-Net plan (schemes {list(schemes)}, patch {list(plan.patch_size)}, "
                               f"spacing {list(plan.spacing)})")
    return plan


@dataclass
class Preprocessed:
    """A preprocessed image and what the export needs to go back (nnU-Net's ``properties``).

    Attributes:
        data: ``(C, 1, h', w')`` float32 network input at the plans' spacing (transposed axes).
        spacing: ``(z, rows, columns)`` spacing of the input in nnU-Net's transposed order.
        shape_before_cropping: Transposed ``(1, H, W)`` shape of the input.
        bbox: The crop box, per transposed axis ``[start, stop)``.
    """

    data: np.ndarray
    spacing: list[float]
    shape_before_cropping: tuple[int, ...]
    bbox: list[list[int]]

    @property
    def shape_after_cropping(self) -> tuple[int, ...]:
        return tuple(int(b - a) for a, b in self.bbox)


def _manager(plan: ExactPlan) -> Any:
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    return ConfigurationManager(dict(plan.configuration))


def preprocess(image: np.ndarray, spacing: Sequence[float], plan: ExactPlan) -> Preprocessed:
    """Crop, normalise and resample a ``(C, H, W)`` image at ``spacing`` ``(row, column)`` mm as nnU-Net does."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    data = np.asarray(image, np.float32)[:, None]  # (C, 1, H, W), as nnU-Net's 2D reader gives it
    spacing3 = [max(spacing) * 999, float(spacing[0]), float(spacing[1])]
    data = data.transpose([0, *[i + 1 for i in plan.transpose_forward]])
    spacing3 = [spacing3[i] for i in plan.transpose_forward]
    shape_before = tuple(data.shape[1:])
    data, nonzero, bbox = crop_to_nonzero(data, None)
    target = [spacing3[0], *plan.spacing]
    new_shape = compute_new_shape(data.shape[1:], spacing3, target)
    data = normalize(data, tuple(zip(plan.schemes, plan.properties)), use_mask=plan.use_mask, nonzero=nonzero[0])
    data = _manager(plan).resampling_fn_data(data, new_shape, spacing3, target)
    return Preprocessed(np.asarray(data, np.float32), spacing3, shape_before, [list(map(int, b)) for b in bbox])


def _windows(shape: Sequence[int], tile: Sequence[int], step: float) -> list[tuple]:
    """nnU-Net's window slicers over a padded ``(1, H, W)`` image for a 2D tile."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    steps = compute_steps_for_sliding_window(tuple(shape[1:]), tuple(tile), step)
    return [(slice(None), d, slice(a, a + tile[0]), slice(b, b + tile[1]))
            for d in range(shape[0]) for a in steps[0] for b in steps[1]]


def _tile(shape: Sequence[int], plan: ExactPlan, divisor: Sequence[int] | None) -> tuple[int, int]:
    """The window: nnU-Net's patch; with ``divisor``, an image smaller than the patch runs at its own
    size rounded up to multiples of ``divisor`` (ts2d-xray's padding, not TS2D's)."""
    if divisor is None:
        return plan.patch_size
    return tuple(min(p, -(-int(s) // int(d)) * int(d)) for s, p, d in zip(shape[-2:], plan.patch_size, divisor))


def _mirrored(network: Forward, x: torch.Tensor, mirror_axes: Sequence[int]) -> torch.Tensor:
    """nnU-Net's ``_internal_maybe_mirror_and_predict``: the mean over every combination of mirrored axes."""
    prediction = network(x)
    axes = [a + 2 for a in mirror_axes]
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    for dims in combos:
        prediction += torch.flip(network(torch.flip(x, dims)), dims)
    return prediction / (len(combos) + 1) if combos else prediction


def _one_network(network: Forward, data: torch.Tensor, tile: Sequence[int], step: float,
                 mirror_axes: Sequence[int], accumulate: torch.dtype, keep: tuple) -> torch.Tensor:
    """Logits ``(K, 1, h, w)`` of one network over a padded image, Gaussian-blended in ``accumulate``.

    ``keep`` slices the unpadded image out of the padded ``(K, 1, H, W)``: the blend is
    computed for all of it, as nnU-Net does, but divided by the weights (and checked) only
    inside ``keep``, the same values for far fewer pixels.
    """
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    device = data.device
    gaussian = compute_gaussian(tuple(tile), sigma_scale=1. / 8, value_scaling_factor=10, device=device)
    windows = _windows(data.shape[1:], tile, step)
    if len(windows) == 1:  # one window: nnU-Net's zeros + p * g, rounded to `accumulate`, is that rounding alone
        prediction = _mirrored(network, data[windows[0]][None], mirror_axes)[0].float()[keep[:1] + keep[2:]]
        weights = gaussian[keep[2:]]
        logits = (prediction * weights).to(accumulate)[:, None]
        counts = weights.to(accumulate)
    else:
        logits = counts = None
        for sl in windows:
            prediction = _mirrored(network, data[sl][None], mirror_axes)[0].float()
            if logits is None:
                logits = torch.zeros((prediction.shape[0], *data.shape[1:]), dtype=accumulate, device=device)
                counts = torch.zeros(data.shape[1:], dtype=accumulate, device=device)
            prediction *= gaussian
            logits[sl] += prediction
            counts[sl[1:]] += gaussian
        logits, counts = logits[keep], counts[keep[1:]]
    logits = torch.div(logits, counts)
    extremes = torch.stack(torch.aminmax(logits)) if logits.numel() else logits.new_zeros(2)
    if bool(torch.isinf(extremes).any()):  # one pass, no mask of the whole array
        raise RuntimeError("infinite logits in nnU-Net's float16 accumulation")
    return logits


@torch.inference_mode()
def predict_logits(networks: Sequence[Forward], pre: Preprocessed, plan: ExactPlan, *,
                   step: float = 0.5, mirror_axes: Sequence[int] = (),
                   accumulate: torch.dtype = torch.half, divisor: Sequence[int] | None = None) -> torch.Tensor:
    """nnU-Net's logits ``(K + 1, 1, h', w')`` (float16, on the CPU) of the folds for a preprocessed image.

    Args:
        networks: One network per fold, eval mode, all outputs (background included): torch
            modules or :class:`~ts2d_xray.nnunet.backend.OnnxNetwork` sessions.
        pre: From :func:`preprocess`.
        plan: The group's plan.
        step: Window step as a fraction of the patch (nnU-Net and TS2D: 0.5).
        mirror_axes: Mirroring axes (nnU-Net's ``inference_allowed_mirroring_axes`` when
            mirroring is on), in the network's spatial axes.
        accumulate: The dtype windows are blended in: nnU-Net's float16 by default;
            float32 to compare logits below float16's resolution.
        divisor: None (TS2D): pad to at least the full patch.  The network's stride
            product ``(H, W)``: an image smaller than the patch is padded only to the
            next multiples of it, ts2d-xray's faster way (about 4x less work for a CT at
            1.5 mm under a 512 x 512 patch); the instance norms then see another area
            and the masks are no longer TS2D's.
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    device = network_device(networks[0])
    data = torch.from_numpy(pre.data).to(device)
    tile = _tile(data.shape, plan, divisor)
    data, revert = pad_nd_image(data, tile, "constant", {"value": 0}, True, None)
    keep = (slice(None), *revert[1:])
    total = None
    for network in networks:
        with torch.autocast("cuda", enabled=True) if device.type == "cuda" else contextlib.nullcontext():
            logits = _one_network(network, data, tile, step, mirror_axes, accumulate, keep).to("cpu")
        total = logits if total is None else total.add_(logits)
    if len(networks) > 1:
        total /= len(networks)
    return total


def native_logits(logits: torch.Tensor, pre: Preprocessed, plan: ExactPlan) -> np.ndarray:
    """Logits ``(K + 1, 1, h, w)`` resampled (the plans' probability function) to the cropped input grid.

    The grid is the input's inside the crop box (:attr:`Preprocessed.bbox`), in nnU-Net's
    transposed axis order; the values keep nnU-Net's float16.
    """
    config = plan.configuration
    kwargs = config.get("resampling_fn_probabilities_kwargs") or {}
    if (config["resampling_fn_probabilities"] == "resample_data_or_seg_to_shape" and kwargs.get("order") == 1
            and not kwargs.get("is_seg") and logits.shape[1] == pre.shape_after_cropping[0] == 1):
        return _bilinear_like_nnunet(logits, pre.shape_after_cropping[1:])
    current = [pre.spacing[0], *plan.spacing]
    out = _manager(plan).resampling_fn_probabilities(logits, pre.shape_after_cropping, current, pre.spacing)
    return np.asarray(out.numpy() if torch.is_tensor(out) else out)


def _bilinear_like_nnunet(logits: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """``(K, 1, h, w)`` logits to ``(K, 1, *shape)`` as nnU-Net's order-1 resampling computes them.

    nnU-Net resizes each channel's plane with scikit-image (``order=1``, edge mode, no
    anti-aliasing: bilinear with pixel-centre alignment, edges clamped) in float64 and
    stores the result in the logits' dtype; torch's ``align_corners=False`` bilinear in
    float64 is the same interpolation, for all channels in one call (about 10x faster).
    """
    if tuple(logits.shape[-2:]) == tuple(shape):
        return logits.numpy().copy()
    import torch.nn.functional as F

    out = F.interpolate(logits[:, 0][None].double(), size=tuple(int(n) for n in shape), mode="bilinear",
                        align_corners=False)[0]
    return out.to(logits.dtype)[:, None].numpy()


def multilabel_masks(logits: np.ndarray, pre: Preprocessed, plan: ExactPlan,
                     thresholds: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fork's rule on :func:`native_logits`, placed into the input grid.

    Args:
        logits: ``(K + 1, 1, h, w)`` from :func:`native_logits`.
        pre: The preprocessing record (crop box, input shape).
        plan: The group's plan (its ``transpose_backward``).
        thresholds: Per structure, p must be above it (default 0.5, the fork's).

    Returns:
        ``(masks, probabilities)``: ``(K, H, W)`` bool and float32 on the input grid;
        outside the crop box both are 0, as nnU-Net leaves them.
    """
    probs = torch.sigmoid(torch.from_numpy(np.ascontiguousarray(logits)).float()).numpy()
    k = probs.shape[0] - 1
    t = np.full(k, THRESHOLD, np.float32) if thresholds is None else np.asarray(thresholds, np.float32)
    inside = (probs[1:] > t.reshape(k, 1, 1, 1)) & ~(probs[:1] > THRESHOLD)
    box = (slice(None), *[slice(a, b) for a, b in pre.bbox])
    masks = np.zeros((k, *pre.shape_before_cropping), bool)
    full = np.zeros((k, *pre.shape_before_cropping), np.float32)
    masks[box] = inside
    full[box] = probs[1:]
    back = [0, *[i + 1 for i in plan.transpose_backward]]
    return masks.transpose(back)[:, 0], full.transpose(back)[:, 0]
