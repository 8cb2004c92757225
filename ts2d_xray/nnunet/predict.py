"""Network inference on one prepared 2D image: normalisation, padding, sliding windows.

Arrays are ``(C, H, W)`` at a group's pixel size, in its display convention (see
:mod:`ts2d_xray.segment.segmenter`, which prepares them).  Steps, as the model was trained
(:mod:`ts2d_xray.train.data`):

1. Normalise each image channel with nnU-Net's scheme from ``plans.json``
   (``CTNormalization``: clip to the training foreground's 0.5/99.5 percentiles, minus
   its mean, over its standard deviation; ``ZScoreNormalization``: per image), then
   arrange the network inputs (``channel_source``).
2. An image that fits in the training patch is predicted in one pass, zero-padded
   (centred) only up to the next multiple of the network's stride product, not to the
   full patch: a 244 x 224 projection runs at 256 x 256 instead of nnU-Net's 512 x 512.
3. A larger image is tiled with windows of the patch size along the axes that exceed
   it, overlapping by ``1 - step``; the logits are blended with nnU-Net's Gaussian
   importance map (sigma = 1/8 of the tile).
4. The logits of every fold are averaged; optional test-time augmentation (TTA)
   averages the logits of shifted copies (by half the stride product, rows, columns and
   both) and of the mirrorings the checkpoint allows.  Models trained without
   mirroring (left and right structures) allow none.
"""

from __future__ import annotations

import contextlib
import math
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ts2d_xray.nnunet.network import GroupNetwork

__all__ = ["DEFAULT_STEP", "NORMALIZATIONS", "gaussian_map", "normalize", "predict_logits", "window_starts"]

#: nnU-Net's normalisation schemes that inference reproduces.
NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization")
#: Sliding-window step as a fraction of the tile (nnU-Net: 0.5).
DEFAULT_STEP = 0.5
#: Gaussian importance map: sigma as a fraction of the tile size (nnU-Net: 1/8).
GAUSSIAN_SIGMA_SCALE = 1.0 / 8.0


def normalize(array: np.ndarray, normalization: Sequence[tuple[str, Mapping[str, float]]]) -> np.ndarray:
    """Normalise a ``(C, H, W)`` image channel by channel with nnU-Net's classes.

    Args:
        array: The image at the network's pixel size.
        normalization: Per channel ``(scheme name, foreground intensity properties)``.

    Raises:
        ValueError: A channel count other than the plans', or a scheme not in
            :data:`NORMALIZATIONS`.
    """
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    if array.ndim != 3 or array.shape[0] != len(normalization):
        raise ValueError(f"image must be (C, H, W) with C = {len(normalization)}, got {array.shape}")
    out = np.empty(array.shape, np.float32)
    for c, (name, properties) in enumerate(normalization):
        if name not in NORMALIZATIONS:
            raise ValueError(f"normalization scheme {name!r} is not supported; supported: {', '.join(NORMALIZATIONS)}")
        if name == "CTNormalization":
            missing = {"mean", "std", "percentile_00_5", "percentile_99_5"} - set(properties)
            if missing:
                raise ValueError(f"CTNormalization of channel {c} needs foreground intensity properties "
                                 f"{sorted(missing)} in plans.json")
        scheme = getattr(schemes, name)(use_mask_for_norm=False, intensityproperties=dict(properties))
        out[c] = scheme.run(np.array(array[c], dtype=np.float32), None)
    return out


def window_starts(size: int, tile: int, step: float = DEFAULT_STEP) -> list[int]:
    """Start indices of sliding windows of ``tile`` pixels over ``size`` (nnU-Net's rule).

    The windows overlap by at least ``1 - step`` of a tile, the first starts at 0 and
    the last ends at ``size``.
    """
    if tile >= size:
        return [0]
    n = math.ceil((size - tile) / (tile * step)) + 1
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


@lru_cache(maxsize=8)
def _gaussian(shape: tuple[int, int]) -> np.ndarray:
    axes = []
    for n in shape:
        x = np.arange(n, dtype=np.float64) - (n // 2)
        axes.append(np.exp(-0.5 * (x / (n * GAUSSIAN_SIGMA_SCALE)) ** 2))
    g = np.outer(*axes)
    return (g / g.max()).astype(np.float32)


def gaussian_map(shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``(H, W)`` Gaussian importance map of a tile, peak 1 at its centre (nnU-Net's weighting)."""
    return torch.from_numpy(_gaussian(tuple(shape))).to(device)


def _autocast(device: torch.device):
    # Half precision on CUDA, as nnU-Net predicts; float32 on CPU (bfloat16 is far slower
    # on CPUs without native support).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _forward(group: GroupNetwork, batch: torch.Tensor) -> torch.Tensor:
    """Fold-averaged logits ``(B, K, h, w)`` float32."""
    with _autocast(batch.device):
        out = None
        for network in group.networks:
            logits = network(batch).float()
            out = logits if out is None else out.add_(logits)
    return out if len(group.networks) == 1 else out.div_(len(group.networks))


def _sliding(group: GroupNetwork, x: torch.Tensor, step: float, batch_size: int) -> torch.Tensor:
    """Logits ``(K, H, W)`` of one ``(C, H, W)`` input: one padded pass, or Gaussian-blended windows."""
    size = x.shape[-2:]
    tile = [p if s > p else s for s, p in zip(size, group.patch_size)]
    tile = [math.ceil(t / d) * d for t, d in zip(tile, group.divisor)]  # the network needs multiples
    padded = [max(s, t) for s, t in zip(size, tile)]
    lo = [(p - s) // 2 for p, s in zip(padded, size)]
    xp = F.pad(x, (lo[1], padded[1] - size[1] - lo[1], lo[0], padded[0] - size[0] - lo[0]))
    starts = [(a, b) for a in window_starts(padded[0], tile[0], step) for b in window_starts(padded[1], tile[1], step)]
    if len(starts) == 1:
        out = _forward(group, xp[None])[0]
    else:
        weight = gaussian_map(tuple(tile), x.device)
        out = torch.zeros((len(group.structures), *padded), dtype=torch.float32, device=x.device)
        total = torch.zeros(padded, dtype=torch.float32, device=x.device)
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            batch = torch.stack([xp[:, a:a + tile[0], b:b + tile[1]] for a, b in chunk])
            logits = _forward(group, batch)
            for (a, b), tile_logits in zip(chunk, logits):
                out[:, a:a + tile[0], b:b + tile[1]].addcmul_(tile_logits, weight)
                total[a:a + tile[0], b:b + tile[1]].add_(weight)
        out.div_(total)
    return out[:, lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1]]


@torch.inference_mode()
def predict_logits(group: GroupNetwork, image: torch.Tensor, *, step: float = DEFAULT_STEP, batch_size: int = 1,
                   tta: bool = False) -> torch.Tensor:
    """Logits of one group for a normalised image.

    Args:
        group: The loaded group model.
        image: ``(C_in, H, W)`` float32 network input (normalised, channels arranged),
            on the group's device.
        step: Sliding-window step as a fraction of the tile.
        batch_size: Windows per forward pass.
        tta: Average over shifted (and allowed mirrored) copies.

    Returns:
        ``(K, H, W)`` float32 logits on the image's device (sigmoid gives probabilities).
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    out = _sliding(group, image, step, batch_size)
    if not tta:
        return out
    n = 1
    shift = [max(1, d // 2) for d in group.divisor]
    for dy, dx in ((shift[0], 0), (0, shift[1]), (shift[0], shift[1])):
        shifted = _sliding(group, F.pad(image, (dx, 0, dy, 0)), step, batch_size)
        out.add_(shifted[:, dy:, dx:])
        n += 1
    for axis in group.mirror_axes:
        dims = (1 + axis,)
        out.add_(torch.flip(_sliding(group, torch.flip(image, dims), step, batch_size), dims))
        n += 1
    return out.div_(n)
