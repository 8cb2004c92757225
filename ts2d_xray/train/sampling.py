"""Training batches: patches with foreground oversampling, augmentation and deep-supervision targets.

Batch ``i`` of a training run is a pure function of ``(seed, i)``: its random numbers
(case choice, patch position, and the global numpy/torch generators that the
batchgeneratorsv2 transforms draw from) are seeded from them.  So a run gives the same
batches whether it is built in this process or in data-loader workers, and a resumed
run continues with the batches an uninterrupted one would have seen.

Sampling follows nnU-Net's ``nnUNetDataLoader``: a case is drawn uniformly; the last
``round(B * oversample)`` patches of a batch are centred on a pixel of one structure,
drawn uniformly among those the case holds (per-structure oversampling); the others lie
anywhere in the image, padded by half the margin the augmentation needs; pixels outside
the image are 0 (the normalised mean) in the image and background in the masks.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ts2d_xray.train.data import TrainingCase

__all__ = ["BatchSource", "PatchSampler", "downsample_targets", "iterate_batches"]


def _crop(array: np.ndarray, lower: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[:, lower : lower + size]`` of a ``(C, H, W)`` array, zero outside it."""
    out = np.zeros((array.shape[0], *size), dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for lo, n, extent in zip(lower, size, array.shape[1:]):
        a, b = max(lo, 0), min(lo + n, extent)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = array[tuple(src)]
    return out


def downsample_targets(masks: torch.Tensor, scales: Sequence[Sequence[float]]) -> list[torch.Tensor]:
    """Deep-supervision targets: ``(B, K, H, W)`` masks at each scale (nearest-exact, as nnU-Net)."""
    out = []
    as_float = None
    for scale in scales:
        if all(s == 1 for s in scale):
            out.append(masks)
            continue
        if as_float is None:
            as_float = masks.float()
        size = [round(n * s) for n, s in zip(masks.shape[2:], scale)]
        out.append(torch.nn.functional.interpolate(as_float, size, mode="nearest-exact").to(masks.dtype))
    return out


class PatchSampler:
    """Draws training batches from :class:`TrainingCase` s.

    A patch's case is drawn uniformly, or in proportion to the cases' ``weight`` when
    they differ (e.g. to show rare films more often); within a case the patch is
    placed as nnU-Net places it.

    Args:
        cases: The training cases.
        patch_size: Network input ``(H, W)``.
        batch_size: Patches per batch.
        augmentation: ``aug(image, masks) -> (image, masks)`` (see :mod:`.augment`),
            taking crops of ``input_size`` pixels.
        input_size: Crop size fed to the augmentation.
        ds_scales: Deep-supervision scales per output (``[[1, 1], [0.5, 0.5], ...]``).
        oversample: Share of each batch centred on a structure.
        seed: Base seed.
        masked: Return per-structure validity ``valid (B, K, 1, 1)`` (structures a case's
            labels do not cover are 0) instead of ``None``.
        shard: ``(start, stop)``: return only these patches of each batch (one process's
            share in distributed training, :mod:`.distributed`); default all ``B``.

    A call ``sampler(i)`` returns batch ``i``: ``{"data": (B, C, H, W) float32,
    "target": [(B, K, h, w) uint8 per scale], "valid": (B, K, 1, 1) float32 or None,
    "keys": case ids}``, with ``stop - start`` patches for a shard.  A shard's patches are
    exactly those of the whole batch: the patches before it are made too (the
    augmentation draws its random numbers from generators that run through the batch in
    order) and dropped, the ones after it are not made.
    """

    def __init__(self, cases: Sequence[TrainingCase], patch_size: Sequence[int], batch_size: int,
                 augmentation: Callable, input_size: Sequence[int], ds_scales: Sequence[Sequence[float]] | None,
                 oversample: float, seed: int, masked: bool, shard: tuple[int, int] | None = None):
        if not cases:
            raise ValueError("cases must hold at least one training case")
        self.shard = (0, int(batch_size)) if shard is None else (int(shard[0]), int(shard[1]))
        if not 0 <= self.shard[0] < self.shard[1] <= batch_size:
            raise ValueError(f"shard {shard} is not a non-empty part of a batch of {batch_size} patches")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.input_size = tuple(int(p) for p in input_size)
        self.batch_size = int(batch_size)
        self.augmentation = augmentation
        self.ds_scales = [[1.0, 1.0]] if ds_scales is None else [list(s) for s in ds_scales]
        self.oversample = float(oversample)
        self.seed = int(seed)
        self.masked = bool(masked)
        weights = np.array([c.weight for c in self.cases], dtype=float)
        # Equal weights keep the uniform draw, so that batches stay what they were without weights.
        self._p = None if np.all(weights == weights[0]) else weights / weights.sum()

    def __call__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        np_seed, torch_seed = int(rng.integers(2 ** 32)), int(rng.integers(2 ** 63))
        # Seed the global generators the transforms use, and put them back afterwards.
        saved = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                np.random.seed(np_seed)
                torch.manual_seed(torch_seed)
                return self._batch(rng)
        finally:
            np.random.set_state(saved)

    def _batch(self, rng: np.random.Generator) -> dict:
        b, (start, stop) = self.batch_size, self.shard
        n_channels, n_structures = self.cases[0].image.shape[0], self.cases[0].masks.shape[0]
        data = torch.empty((stop - start, n_channels, *self.patch_size), dtype=torch.float32)
        target = torch.empty((stop - start, n_structures, *self.patch_size), dtype=torch.uint8)
        valid = torch.empty((stop - start, n_structures, 1, 1), dtype=torch.float32)
        keys = []
        with torch.no_grad():
            for j in range(stop):
                case = self.cases[int(rng.integers(len(self.cases)) if self._p is None
                                      else rng.choice(len(self.cases), p=self._p))]
                # nnU-Net: the last round(B * oversample) patches are forced onto foreground.
                force_fg = j >= round(b * (1 - self.oversample))
                lower = self._lower_corner(case, force_fg, rng)
                image = torch.from_numpy(_crop(case.image, lower, self.input_size))
                masks = torch.from_numpy(_crop(case.masks, lower, self.input_size))
                image, masks = self.augmentation(image, masks)
                if tuple(image.shape[1:]) != self.patch_size or tuple(masks.shape[1:]) != self.patch_size:
                    raise ValueError(f"augmentation returned image {tuple(image.shape)} and masks "
                                     f"{tuple(masks.shape)}; expected (C, *{self.patch_size}) patches")
                if j < start:
                    continue  # another process's patch
                data[j - start] = image
                target[j - start] = masks
                valid[j - start, :, 0, 0] = torch.from_numpy(case.labelled.astype(np.float32))
                keys.append(case.id)
        return {"data": data, "target": downsample_targets(target, self.ds_scales),
                "valid": valid if self.masked else None, "keys": keys}

    def _lower_corner(self, case: TrainingCase, force_fg: bool, rng: np.random.Generator) -> list[int]:
        """Top-left corner of the crop (nnU-Net's ``get_bbox``, 2D)."""
        shape = case.image.shape[1:]
        size = self.input_size
        need = [max(i - p, i - s) for i, p, s in zip(size, self.patch_size, shape)]
        lbs = [-n // 2 for n in need]
        ubs = [s + n // 2 + n % 2 - i for s, n, i in zip(shape, need, size)]
        if force_fg:
            eligible = [k for k, where in enumerate(case.locations) if len(where)]
            if eligible:
                where = case.locations[eligible[int(rng.integers(len(eligible)))]]
                centre = where[int(rng.integers(len(where)))]
                return [max(lb, int(c) - i // 2) for lb, c, i in zip(lbs, centre, size)]
        return [int(rng.integers(lb, ub + 1)) for lb, ub in zip(lbs, ubs)]


class BatchSource(torch.utils.data.Dataset):
    """Batches ``first .. first + count - 1`` of a sampler, for a ``torch.utils.data.DataLoader``
    (``batch_size=None``: each item is a whole batch; workers share nothing but the cases)."""

    def __init__(self, sampler: PatchSampler, first: int, count: int) -> None:
        self.sampler, self.first, self.count = sampler, int(first), int(count)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self.sampler(self.first + i)


def iterate_batches(source: BatchSource, workers: int, pin_memory: bool = False) -> Iterator[dict]:
    """Every batch of ``source``, in order: made in this process (``workers=0``) or by data-loader workers."""
    if workers == 0:
        return (source[i] for i in range(len(source)))
    loader = torch.utils.data.DataLoader(source, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=pin_memory, worker_init_fn=_one_thread, prefetch_factor=4)
    return iter(loader)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers make batches; the main process computes
