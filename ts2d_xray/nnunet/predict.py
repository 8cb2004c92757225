"""Network logits of one prepared 2D image: whole-image and sliding-window prediction.

Arrays are ``(C, H, W)`` network inputs (normalised, :mod:`ts2d_xray.nnunet.normalize`;
channels arranged) at the network's pixel size; logits are ``(K, H, W)`` float32, one
per structure (a sigmoid gives probabilities).  Both functions pad with zeros (the
normalised mean), centred, and crop the logits back to the input's size.

* :func:`whole_image_logits` (validation during training): one pass of one network,
  padded to the next multiple of its stride product.
* :func:`sliding_window_logits` (inference), nnU-Net's steps with one change:

  1. An image that fits in the training patch is predicted in one pass, padded only up
     to the next multiple of the stride product, not to the full patch: a 244 x 224
     projection runs at 256 x 256 instead of nnU-Net's 512 x 512.
  2. A larger image is tiled with windows of the patch size along the axes that exceed
     it, overlapping by ``1 - step``; the logits are blended with nnU-Net's Gaussian
     importance map (sigma = 1/8 of the tile).
  3. The logits of every network (fold) are averaged; optional test-time augmentation
     (TTA) averages the logits of shifted copies (by half the stride product, rows,
     columns and both) and of the allowed mirrorings.  Models trained without
     mirroring (left and right structures) allow none.
"""

from __future__ import annotations

import contextlib
import math
from functools import lru_cache
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_STEP", "Forward", "gaussian_map", "sliding_window_logits", "whole_image_logits", "window_starts"]

#: A network's forward pass: ``(B, C, H, W)`` float32 tensor -> ``(B, K, H, W)`` logits (a torch module or an
#: :class:`~ts2d_xray.nnunet.backend.OnnxNetwork`).
Forward = Callable[[torch.Tensor], torch.Tensor]
#: Sliding-window step as a fraction of the tile (nnU-Net: 0.5).
DEFAULT_STEP = 0.5
#: Gaussian importance map: sigma as a fraction of the tile size (nnU-Net: 1/8).
GAUSSIAN_SIGMA_SCALE = 1.0 / 8.0


def window_starts(size: int, tile: int, step: float = DEFAULT_STEP) -> list[int]:
    """Start indices of sliding windows of ``tile`` pixels over ``size`` (nnU-Net's rule).

    The windows overlap by at least ``1 - step`` of a tile, the first starts at 0 and
    the last ends at ``size``.

    Example:
        >>> window_starts(300, 128)
        [0, 57, 115, 172]
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


def _autocast(device: torch.device) -> ContextManager:
    # Half precision on CUDA, as nnU-Net trains and predicts; float32 on CPU (bfloat16 is
    # far slower on CPUs without native support).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _centre_pad(x: torch.Tensor, padded: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Zero-pad ``(C, H, W)`` to ``padded`` ``(H', W')``, centred; return it and the crop back."""
    size = x.shape[-2:]
    lo = [(p - s) // 2 for p, s in zip(padded, size)]
    xp = F.pad(x, (lo[1], padded[1] - size[1] - lo[1], lo[0], padded[0] - size[0] - lo[0]))
    return xp, (slice(lo[0], lo[0] + size[0]), slice(lo[1], lo[1] + size[1]))


def _forward(networks: Sequence[Forward], batch: torch.Tensor) -> torch.Tensor:
    """Network-averaged logits ``(B, K, h, w)`` float32."""
    with _autocast(batch.device):
        out = None
        for network in networks:
            logits = network(batch).float()
            out = logits if out is None else out.add_(logits)
    return out if len(networks) == 1 else out.div_(len(networks))


def _sliding(networks: Sequence[Forward], x: torch.Tensor, patch_size: Sequence[int],
             divisor: Sequence[int], step: float, batch_size: int) -> torch.Tensor:
    """Logits ``(K, H, W)`` of one ``(C, H, W)`` input: one padded pass, or Gaussian-blended windows."""
    size = x.shape[-2:]
    tile = [p if s > p else s for s, p in zip(size, patch_size)]
    # The network needs multiples, and at least two: a 1-pixel bottleneck breaks instance norm.
    tile = [max(math.ceil(t / d), 2) * d for t, d in zip(tile, divisor)]
    padded = [max(s, t) for s, t in zip(size, tile)]
    xp, crop = _centre_pad(x, padded)
    starts = [(a, b) for a in window_starts(padded[0], tile[0], step) for b in window_starts(padded[1], tile[1], step)]
    if len(starts) == 1:
        return _forward(networks, xp[None])[0][:, crop[0], crop[1]]
    weight = gaussian_map(tuple(tile), x.device)
    out = None
    total = torch.zeros(padded, dtype=torch.float32, device=x.device)
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        logits = _forward(networks, torch.stack([xp[:, a:a + tile[0], b:b + tile[1]] for a, b in chunk]))
        if out is None:
            out = torch.zeros((logits.shape[1], *padded), dtype=torch.float32, device=x.device)
        for (a, b), tile_logits in zip(chunk, logits):
            out[:, a:a + tile[0], b:b + tile[1]].addcmul_(tile_logits, weight)
            total[a:a + tile[0], b:b + tile[1]].add_(weight)
    return out.div_(total)[:, crop[0], crop[1]]


@torch.inference_mode()
def sliding_window_logits(networks: Sequence[Forward], image: torch.Tensor, patch_size: Sequence[int],
                          divisor: Sequence[int], *, step: float = DEFAULT_STEP, batch_size: int = 1,
                          tta: bool = False, mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """Logits of networks (folds, averaged) for a normalised image, by sliding windows.

    Args:
        networks: Networks in eval mode, without deep supervision, on the image's device:
            torch modules, or any forward callable of the same contract
            (:class:`~ts2d_xray.nnunet.backend.OnnxNetwork`).
        image: ``(C_in, H, W)`` float32 network input (normalised, channels arranged).
        patch_size: ``(H, W)`` training patch in pixels: the largest window.
        divisor: ``(H, W)``: window sizes must be multiples of these (stride products).
        step: Sliding-window step as a fraction of the tile.
        batch_size: Windows per forward pass.
        tta: Average over shifted and mirrored copies.
        mirror_axes: Axes the model allows mirroring along with ``tta``, in (H, W) axes.

    Returns:
        ``(K, H, W)`` float32 logits on the image's device.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    out = _sliding(networks, image, patch_size, divisor, step, batch_size)
    if not tta:
        return out
    n = 1
    shift = [max(1, d // 2) for d in divisor]
    for dy, dx in ((shift[0], 0), (0, shift[1]), (shift[0], shift[1])):
        shifted = _sliding(networks, F.pad(image, (dx, 0, dy, 0)), patch_size, divisor, step, batch_size)
        out.add_(shifted[:, dy:, dx:])
        n += 1
    for axis in mirror_axes:
        dims = (1 + axis,)
        out.add_(torch.flip(_sliding(networks, torch.flip(image, dims), patch_size, divisor, step, batch_size), dims))
        n += 1
    return out.div_(n)


@torch.no_grad()
def whole_image_logits(network: torch.nn.Module, image: np.ndarray | torch.Tensor, divisible_by: Sequence[int],
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits ``(K, H, W)`` float32 (on the CPU) of one network for one whole image ``(C, H, W)``.

    The image is padded to multiples of ``divisible_by`` and goes through the network
    at once.  The network is put in eval mode for the call; deep supervision, if on, is
    switched off (only the full-resolution output is computed).  Both are restored.
    """
    device = torch.device(device)
    image = torch.as_tensor(image, dtype=torch.float32)
    padded, crop = _centre_pad(image, [math.ceil(n / int(d)) * int(d) for n, d in zip(image.shape[1:], divisible_by)])
    decoder = getattr(network, "decoder", None)
    deep = getattr(decoder, "deep_supervision", None)
    was_training = network.training
    network.eval()
    if deep:
        decoder.deep_supervision = False
    try:
        with _autocast(device):
            out = network(padded[None].to(device))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out[0][:, crop[0], crop[1]].float().cpu()
    finally:
        if deep:
            decoder.deep_supervision = True
        network.train(was_training)
