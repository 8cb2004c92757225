"""Ray casting through a CT: line integrals per channel and path lengths per structure.

Two renderers compute the same quantities on the same rays (from
:func:`synth.geometry.detector_rays`):

``"torch"`` (ours, the default)
    Slice-wise ray marching (Joseph's method): each ray is sampled where it crosses
    the centre plane of every slab of slices along the volume axis closest to the
    beam, bilinearly within the plane; all rays and planes go through batched 2D
    ``grid_sample`` calls.  Structure path lengths come from the same sample points:
    the label at each point (nearest voxel) and one weighted ``bincount`` over
    (ray, label) pairs give every structure at once.
``"diffdrr"`` (reference)
    DiffDRR's Siddon renderer: exact intersections of each ray with the voxel grid,
    nearest-voxel values, and DiffDRR's label channels for path lengths.

Units: a line integral is the sum of value x length in mm (so a density in g/cm³
gives g/cm³·mm; divide by 10 for g/cm²); path lengths are in mm.  Volumes are torch
tensors ``(C, z, y, x)`` in SimpleITK array order on a :class:`~ts2d_xray.image.Grid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ts2d_xray.image import Grid, LabelMap, Masks, Plane

from synth.presets import LabelThresholds

__all__ = ["Renderer", "RenderResult", "label_masks", "render", "world_to_index"]

Renderer = Literal["torch", "diffdrr"]

#: Largest number of sample points handled in one grid_sample call (bounds memory:
#: about 40 bytes per sample and channel).
_SAMPLES_PER_CHUNK = 4_000_000
#: Rays per chunk for DiffDRR's Siddon renderer, whose memory grows with the number
#: of voxel planes crossed.
_DIFFDRR_RAYS_PER_CHUNK = 4096


@dataclass(frozen=True)
class RenderResult:
    """Rendered rays.

    Attributes:
        integrals: ``(C, H, W)`` line integrals of each volume channel (value x mm).
        path_mm: ``(L, V, H, W)`` path length in mm through each label value of each
            label layer (index = label value, 0 = background), or None without labels.
    """

    integrals: torch.Tensor
    path_mm: torch.Tensor | None


def world_to_index(points: np.ndarray, grid: Grid) -> np.ndarray:
    """Continuous ITK index ``(i, j, k)`` of LPS points in mm; voxel centres are integers."""
    affine = grid.matrix * np.asarray(grid.spacing)[None, :]
    return (np.asarray(points, float) - np.asarray(grid.origin)) @ np.linalg.inv(affine).T


def render(
    volume: torch.Tensor,
    grid: Grid,
    sources: np.ndarray,
    targets: np.ndarray,
    *,
    labels: torch.Tensor | None = None,
    renderer: Renderer = "torch",
    step_mm: float = 1.5,
) -> RenderResult:
    """Integrate a volume (and measure label path lengths) along rays.

    Args:
        volume: ``(C, z, y, x)`` float32 values on ``grid``.
        grid: Geometry of ``volume`` (and ``labels``).
        sources, targets: ``(H, W, 3)`` ray start and end points, LPS mm.
        labels: Optional ``(L, z, y, x)`` integer label layers on the same grid
            (:attr:`ts2d_xray.image.LabelMap.layers`).
        renderer: ``"torch"`` or ``"diffdrr"`` (see the module docstring).
        step_mm: Sampling step of the torch renderer along the beam in mm: slices
            thinner than this are averaged into slabs (at least one slice each).

    Returns:
        :class:`RenderResult` with ``(C, H, W)`` integrals and ``(V, H, W)`` path lengths.
    """
    if volume.ndim != 4 or tuple(volume.shape[1:]) != tuple(grid.shape):
        raise ValueError(f"volume must be (C, *{grid.shape}), got {tuple(volume.shape)}")
    if labels is not None and (labels.ndim != 4 or tuple(labels.shape[1:]) != tuple(grid.shape)):
        raise ValueError(f"labels must be (L, *{grid.shape}), got {tuple(labels.shape)}")
    shape = sources.shape[:2]
    src = world_to_index(sources.reshape(-1, 3), grid)
    dst = world_to_index(targets.reshape(-1, 3), grid)
    if renderer == "torch":
        integrals, path = _march(volume, src, dst, labels, grid, step_mm)
    elif renderer == "diffdrr":
        length_mm = np.linalg.norm(targets - sources, axis=-1).reshape(-1)
        integrals, path = _siddon(volume, src, dst, length_mm, labels)
    else:
        raise ValueError(f"renderer must be 'torch' or 'diffdrr', got {renderer!r}")
    integrals = integrals.reshape(volume.shape[0], *shape)
    return RenderResult(integrals, None if path is None else path.reshape(*path.shape[:2], *shape))


def _march(
    volume: torch.Tensor, src: np.ndarray, dst: np.ndarray, labels: torch.Tensor | None, grid: Grid, step_mm: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Slice-by-slice ray marching (Joseph's method) along the index axis closest to the beam.

    Each ray is sampled where it crosses the centre plane of each slab of slices along
    that axis, with bilinear interpolation inside the plane: a 2D ``grid_sample`` over a
    batch of planes, several times faster on a CPU than 3D trilinear sampling of the
    same points.  Slabs are ``f`` slices thick, ``f = floor(step_mm / spacing)``, and
    hold the slices' mean, so integrals along the axis are kept exactly.

    Returns:
        ``(C, rays)`` line integrals and ``(L, V, rays)`` path lengths in mm (or None).
    """
    axis = _march_axis(dst - src)  # ITK index axis i, j or k
    array_axis = 2 - axis  # numpy axes of volume[c] are (k, j, i)
    plane_axes = tuple(a for a in (0, 1, 2) if a != array_axis)  # (rows, cols) of each plane
    # (slices, channels, rows, cols): the slices along the march axis as a batch of planes.
    order = (1 + array_axis, 0, *(1 + a for a in plane_axes))
    f = max(1, int(step_mm // grid.spacing[axis]))
    slabs, centres = _slabs(volume.float().permute(*order), f)
    lines = _ray_lines(src, dst, axis, plane_axes, grid, f)
    label_slabs, n_values = None, 0
    if labels is not None:
        nearest = torch.from_numpy(np.minimum(np.round(centres).astype(int), volume.shape[1 + array_axis] - 1))
        # (slabs, L, P, Q): the label layers are channels of the nearest-neighbour lookup.
        label_slabs = labels.permute(*order)[nearest].float()
        n_values = int(labels.max()) + 1
    sums, counts = _sample_slabs(slabs, label_slabs, n_values, torch.from_numpy(centres).float()[:, None], lines)
    integrals = sums * lines.seg_mm[None]
    return integrals, None if counts is None else counts.float() * lines.seg_mm


def _march_axis(direction: np.ndarray) -> int:
    """The ITK index axis that ``(rays, 3)`` directions (index units) run along most."""
    axis = int(np.argmax(np.abs(direction).mean(axis=0)))
    if np.any(np.abs(direction[:, axis]) < 1e-9):
        raise ValueError("a ray runs parallel to every slice of the volume; use renderer='diffdrr'")
    return axis


@dataclass(frozen=True)
class _RayLines:
    """Rays as lines in the slab coordinate ``c`` (index units along the march axis), per ray.

    ``offset + gain * c`` is where a ray crosses the plane at ``c``, in ``grid_sample``
    coordinates (columns, rows); it exists for ``lo <= c <= hi``; ``seg_mm`` is its
    length through one slab in mm.
    """

    offset: torch.Tensor  # (rays, 2)
    gain: torch.Tensor  # (rays, 2)
    lo: torch.Tensor  # (rays,)
    hi: torch.Tensor  # (rays,)
    seg_mm: torch.Tensor  # (rays,)


def _ray_lines(src: np.ndarray, dst: np.ndarray, axis: int, plane_axes: tuple[int, ...], grid: Grid, f: int
               ) -> _RayLines:
    """The :class:`_RayLines` of rays from ``src`` to ``dst`` (ITK index units) through slabs of ``f`` slices."""
    direction = dst - src
    rows_ijk, cols_ijk = (2 - a for a in plane_axes)  # index axes of the plane's rows and columns
    # Along a ray, the plane coordinates are affine in the slab position c:
    # hit = src + (c - src_a) / dir_a * dir.  With align_corners=True, -1 and +1 are
    # the first and last voxel centres.
    sizes = np.asarray(grid.shape[::-1], float)  # (I, J, K)
    slope = direction / direction[:, axis:axis + 1]
    base = src - slope * src[:, axis:axis + 1]
    scale = np.array([2 / max(sizes[cols_ijk] - 1, 1), 2 / max(sizes[rows_ijk] - 1, 1)])
    offset = torch.from_numpy(np.stack([base[:, cols_ijk], base[:, rows_ijk]], -1) * scale - 1).float()
    gain = torch.from_numpy(np.stack([slope[:, cols_ijk], slope[:, rows_ijk]], -1) * scale).float()
    # Each ray only exists between its source and target.
    lo = torch.from_numpy(np.minimum(src[:, axis], dst[:, axis])).float()
    hi = torch.from_numpy(np.maximum(src[:, axis], dst[:, axis])).float()
    affine = grid.matrix * np.asarray(grid.spacing)[None, :]
    mm_per_index = np.linalg.norm(direction @ affine.T, axis=1) / np.abs(direction[:, axis])
    return _RayLines(offset, gain, lo, hi, torch.from_numpy(mm_per_index * f).float())


def _sample_slabs(
    slabs: torch.Tensor, label_slabs: torch.Tensor | None, n_values: int, c: torch.Tensor, lines: _RayLines
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sums of bilinear samples ``(C, rays)`` and label sample counts ``(L, V, rays)`` (or None) over all slabs.

    Args:
        slabs: ``(slabs, C, P, Q)`` slab values.
        label_slabs: ``(slabs, L, P, Q)`` label values of the slice nearest each slab centre, or None.
        n_values: Largest label value + 1.
        c: ``(slabs, 1)`` slab centres in index units.
        lines: The rays.
    """
    n_rays = len(lines.lo)
    sums = torch.zeros(slabs.shape[1], n_rays)
    counts = None
    if label_slabs is not None:
        counts = torch.zeros(label_slabs.shape[1], n_values, n_rays, dtype=torch.int64)
    # Chunks of rays through all slabs: bounded memory, and each label count array
    # is made once per ray rather than once per slab chunk.
    per_chunk = max(1, _SAMPLES_PER_CHUNK // slabs.shape[0])
    for start in range(0, n_rays, per_chunk):
        rays = slice(start, min(start + per_chunk, n_rays))
        coords = torch.addcmul(lines.offset[None, rays], lines.gain[None, rays], c[..., None])[:, None]
        inside = (c >= lines.lo[None, rays]) & (c <= lines.hi[None, rays])  # (slabs, rays)
        sampled = F.grid_sample(slabs, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
        sums[:, rays] = (sampled[:, :, 0] * inside[:, None]).sum(dim=0)
        if label_slabs is not None:
            counts[:, :, rays] = _label_counts(label_slabs, coords, inside, n_values)
    return sums, counts


def _label_counts(label_slabs: torch.Tensor, coords: torch.Tensor, inside: torch.Tensor, n_values: int
                  ) -> torch.Tensor:
    """``(L, V, n)`` samples of each label value per ray: one weighted ``bincount`` over (ray, value) pairs."""
    values = F.grid_sample(label_slabs, coords, mode="nearest", padding_mode="zeros",
                           align_corners=True)[:, :, 0].long()  # (slabs, L, rays)
    n = inside.shape[1]
    per_layer = []
    for layer in range(values.shape[1]):
        key = (values[:, layer] * inside) * n + torch.arange(n)[None]  # outside the ray: background
        per_layer.append(torch.bincount(key.reshape(-1), minlength=n_values * n).reshape(n_values, n))
    return torch.stack(per_layer)


def _slabs(planes: torch.Tensor, f: int) -> tuple[torch.Tensor, np.ndarray]:
    """Average groups of ``f`` planes ``(A, C, P, Q)``; returns the slabs and their centres (index units).

    A last, incomplete group is scaled by its share of ``f`` so that every slab's
    value times ``f`` slices is the sum of its planes.
    """
    n = planes.shape[0]
    if f == 1:
        return planes.contiguous(), np.arange(n, dtype=float)
    full = n // f
    parts = [planes[: full * f].reshape(full, f, *planes.shape[1:]).mean(dim=1)]
    if n > full * f:
        parts.append(planes[full * f:].sum(dim=0, keepdim=True) / f)
    return torch.cat(parts).contiguous(), np.arange(len(parts[0]) + len(parts) - 1) * f + (f - 1) / 2


def _siddon(
    volume: torch.Tensor, src: np.ndarray, dst: np.ndarray, length_mm: np.ndarray, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DiffDRR's Siddon renderer on the same rays: ``(C, rays)`` integrals, ``(L, V, rays)`` path mm (or None)."""
    from diffdrr.renderers import Siddon

    siddon = Siddon(mode="nearest")
    channels, n_rays = volume.shape[0], len(src)
    out = torch.zeros(channels, n_rays)
    path = None
    if labels is not None:
        n_values = int(labels.max()) + 1
        path = torch.zeros(labels.shape[0], n_values, n_rays)
        # DiffDRR indexes volumes as (i, j, k); grid_sample needs float masks.
        masks = [layer.permute(2, 1, 0).contiguous().float() for layer in labels]
        ones = torch.ones(masks[0].shape, dtype=torch.float32)
    for start in range(0, n_rays, _DIFFDRR_RAYS_PER_CHUNK):
        sl = slice(start, min(start + _DIFFDRR_RAYS_PER_CHUNK, n_rays))
        s = torch.from_numpy(src[sl]).float()[None]
        d = torch.from_numpy(dst[sl]).float()[None]
        img = torch.from_numpy(length_mm[sl]).float()[None, None]
        for c in range(channels):
            # DiffDRR indexes volumes as (i, j, k).
            vol = volume[c].permute(2, 1, 0).contiguous().float()
            out[c, sl] = siddon(vol, s, d, img)[0, 0]
        for layer, mask in enumerate(masks if labels is not None else ()):
            per_label = siddon(ones, s, d, img, mask=mask)[0]  # (largest value + 1, rays)
            path[layer, : per_label.shape[0], sl] = per_label
    return out, path


def label_masks(path_mm: torch.Tensor, labels: LabelMap, thresholds: LabelThresholds, plane: Plane) -> Masks:
    """Masks from rendered path lengths: a pixel belongs to a structure whose path exceeds its threshold.

    Args:
        path_mm: ``(L, V, H, W)`` from :func:`render` with ``labels.layers``.
        labels: The label map whose layers were rendered (names, layer, value).
        thresholds: Per-structure path-length thresholds in mm.
        plane: The image plane of the rendered view.
    """
    names = tuple(labels.segments)
    out = np.zeros((len(names),) + tuple(plane.shape), dtype=bool)
    path = path_mm.detach().cpu().numpy()  # numpy: a hundred small comparisons, no thread-pool hand-offs
    for k, name in enumerate(names):
        layer, value = labels.segments[name]
        if value < path.shape[1]:
            np.greater(path[layer, value], thresholds.threshold(name), out=out[k])
    return Masks(out, names, plane)
