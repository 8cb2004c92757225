"""Synthetic radiographs of a CT with labels in the same geometry.

One call of :func:`synthesize` draws a view from a preset, renders the CT's material
line integrals and every structure's path length on the same rays, turns the
integrals into a radiograph with X-ray physics, and applies domain randomisation to
image and masks together.  Everything random comes from the ``rng`` passed in, so a
seed reproduces a sample exactly.

The image follows the radiograph display convention (patient's right on the image
left, head up) for AP and PA views; its :class:`~ts2d_xray.image.Plane` is the plane
through the isocentre, so ``plane.spacing`` is the pixel size at the patient and
``meta["view"]`` records the detector pitch and the magnification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ts2d_xray.image import Image2D, LabelMap, Masks, Volume

from synth import materials, randomize
from synth.physics import radiograph
from synth.processing import field_of_view
from synth.physics_params import PhysicsRanges, as_dict
from synth.geometry import View, detector_rays, view_plane, volume_center
from synth.presets import LabelThresholds, Preset, load_preset
from synth.render import Renderer, label_masks, render

__all__ = ["Prepared", "Sample", "prepare", "save_sample", "synthesize"]


@dataclass(frozen=True)
class Sample:
    """One synthetic radiograph.

    Attributes:
        image: ``(1, H, W)`` float32 in [0, 1], channel ``"xray"``.
        masks: Multi-label masks on the image's plane, or None without labels: the
            label map's structures, then the radiographic lung fields
            (:data:`ts2d_xray.labels.LUNG_FIELDS`, see :mod:`ts2d_xray.radiographic`).
        view: The sampled geometry.
        params: JSON-serialisable record of everything sampled (view, physics,
            attenuation scales, augmentation).
    """

    image: Image2D
    masks: Masks | None
    view: View
    params: Mapping[str, object]


@dataclass(frozen=True, eq=False)
class Prepared:
    """Per-CT work shared by all samples of that CT: material densities and labels as tensors."""

    densities: torch.Tensor  # (materials, z, y, x) g/cm³
    layers: torch.Tensor | None  # (L, z, y, x) label layers
    ct: Volume
    labels: LabelMap | None
    # Isocentres already computed, by ``center_on``: a structure's centroid costs a
    # pass over the volume.
    centers: dict[str, np.ndarray] = field(default_factory=dict)


def prepare(ct: Volume, labels: LabelMap | None = None, thresholds: materials.MaterialThresholds | None = None) -> Prepared:
    """Convert a CT to material densities once, for many samples."""
    if labels is not None and not labels.grid.matches(ct.grid):
        raise ValueError(f"labels ({labels.grid.describe()}) are not on the CT grid ({ct.grid.describe()})")
    hu = torch.from_numpy(np.ascontiguousarray(ct.array, dtype=np.float32))
    densities = materials.hu_to_densities(hu, thresholds or materials.MaterialThresholds())
    layers = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels.layers))
    return Prepared(densities, layers, ct, labels)


def _isocenter(prepared: Prepared, center_on: str) -> np.ndarray:
    if center_on not in prepared.centers:
        prepared.centers[center_on] = _find_center(prepared, center_on)
    return prepared.centers[center_on]


def _find_center(prepared: Prepared, center_on: str) -> np.ndarray:
    labels = prepared.labels
    if center_on != "volume" and labels is not None:
        from ts2d_xray.labels import expand

        members = [n for n in expand(center_on) if n in labels.segments]
        if members:
            mask = np.zeros(labels.grid.shape, bool)
            for name in members:
                mask |= labels.mask(name)
            k, j, i = (idx.mean() for idx in np.nonzero(mask))
            grid = labels.grid
            return np.asarray(grid.origin) + grid.matrix @ (np.array([i, j, k]) * grid.spacing)
    return volume_center(prepared.ct.grid)


def _scaled(prepared: Prepared, scales: Mapping[str, float]) -> torch.Tensor:
    """Densities with each structure's voxels multiplied by its attenuation scale."""
    changed = {n: s for n, s in scales.items() if s != 1.0}
    if not changed or prepared.labels is None:
        return prepared.densities
    factor = None
    for layer_index, layer in enumerate(prepared.labels.layers):
        lut = np.ones(int(layer.max()) + 1, dtype=np.float32)
        for name, scale in changed.items():
            li, value = prepared.labels.segments[name]
            if li == layer_index:
                lut[value] = scale
        # numpy indexes with the small integer labels directly (torch would widen them to int64).
        layer_factor = lut[layer]
        factor = layer_factor if factor is None else factor * layer_factor
    return prepared.densities * torch.from_numpy(factor)


def synthesize(
    ct: Volume | Prepared,
    labels: LabelMap | None = None,
    *,
    preset: str | Preset = "chest-pa",
    rng: np.random.Generator,
    shape: tuple[int, int] | None = None,
    renderer: Renderer = "torch",
    view: View | None = None,
) -> Sample:
    """Render one realistic synthetic radiograph (and its masks) of a CT.

    Args:
        ct: The CT in HU, or the result of :func:`prepare` (faster for many samples).
        labels: The CT's labels (ignored when ``ct`` is prepared: it carries them).
        preset: Preset name or object (see :mod:`synth.presets`).
        rng: Source of all randomness.
        shape: Detector ``(rows, cols)``; default: the preset's.
        renderer: ``"torch"`` (fast) or ``"diffdrr"`` (reference).
        view: A fixed geometry instead of a sampled one.

    Returns:
        A :class:`Sample`.
    """
    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    prepared = ct if isinstance(ct, Prepared) else prepare(ct, labels)
    if view is None:
        view = preset.view.sample(rng, _isocenter(prepared, preset.view.center_on), shape)
    names: Sequence[str] = () if prepared.labels is None else tuple(prepared.labels.segments)
    aug = randomize.AugmentParams.from_dict(preset.augment)
    scales = randomize.attenuation_scales(names, rng, *aug.attenuation_args()) if names else {}
    phys = PhysicsRanges.from_dict(preset.physics).sample(rng)

    sources, targets = detector_rays(view)
    result = render(_scaled(prepared, scales), prepared.ct.grid, sources, targets,
                    labels=prepared.layers, renderer=renderer)
    # Densities in g/cm³ integrated over mm: / 10 gives g/cm².
    image = radiograph(result.integrals / 10.0, phys, view.detector_spacing, rng,
                       fov=field_of_view(sources, targets, prepared.ct.grid))
    plane = view_plane(view)
    masks = None
    if prepared.labels is not None:
        masks = _with_lung_fields(label_masks(result.path_mm, prepared.labels, preset.labels, plane),
                                  result.path_mm, prepared.labels)
    image, mask_array = randomize.augment(image, None if masks is None else masks.array, aug, rng)
    if masks is not None:
        masks = Masks(mask_array, masks.names, plane)
    params = {
        "preset": preset.name,
        "view": view.to_dict(),
        "physics": as_dict(phys),
        "attenuation_scales": {n: s for n, s in scales.items() if s != 1.0},
        "renderer": renderer,
    }
    meta = {"source": prepared.ct.source, "kind": "synthetic radiograph", **params}
    return Sample(Image2D(image[None].astype(np.float32), plane, ("xray",), meta), masks, view, params)


def _with_lung_fields(masks: Masks, path_mm: torch.Tensor, labels: LabelMap) -> Masks:
    """``masks`` followed by the radiographic lung fields of the same rays (:mod:`ts2d_xray.radiographic`).

    The hiding structures are thresholded on their own path lengths, at
    :data:`~ts2d_xray.radiographic.HIDING_MIN_MM`; the fields are added before the
    augmentation, so that they move with the other masks.
    """
    from ts2d_xray.radiographic import HIDING_MIN_MM, derive_lung_fields

    hiding = label_masks(path_mm, labels, LabelThresholds(HIDING_MIN_MM), masks.plane).to_v2()
    fields = derive_lung_fields(masks, hiding)
    return Masks(np.concatenate([masks.array, fields.array]), masks.names + fields.names, masks.plane)


def save_sample(sample: Sample, folder: Path, name: str) -> list[Path]:
    """Write a sample as ``<name>.nii.gz`` (image), ``<name>.seg.nrrd`` (masks, v2 names,
    when present) and ``<name>.png`` (preview with :data:`~ts2d_xray.labels.PREVIEW_STRUCTURES`).

    Each file is written atomically; existing files of the same name are replaced.
    """
    from ts2d_xray.io import write_image2d, write_masks, write_preview
    from ts2d_xray.labels import preview_subset

    written = [write_image2d(sample.image, folder / f"{name}.nii.gz")]
    shown = None
    if sample.masks is not None:
        masks = sample.masks.to_v2()
        written.append(write_masks(masks, folder / f"{name}.seg.nrrd"))
        subset = preview_subset(masks.names)
        shown = masks.select(subset) if subset else None
    written.append(write_preview(sample.image, folder / f"{name}.png", shown))
    return written
