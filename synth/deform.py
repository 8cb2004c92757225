"""Random 3D deformations of a CT and its labels: other "patients" from one scan.

With very few labelled CTs, a model learns one patient's shape.  Before projecting or
rendering, :func:`deform` warps the CT and its labels with one random transform: an
affine part (rotation about each axis, an anisotropic scale, about the volume centre)
followed by a smooth elastic part (a cubic B-spline displacement on a coarse control
grid).  Both come from SimpleITK; the CT is interpolated linearly (air outside the
field of view), every label layer with nearest neighbour.

The output lies on a grid with the input's orientation and physical extent, at
``spacing`` mm (default: the input's), so projections and radiographs of it keep their
meaning in mm.  The transform maps output points to input points, as ITK resampling
does; "scale 1.1" therefore shrinks the anatomy by 1/1.1.

Example:
    >>> rng = np.random.default_rng(0)
    >>> ct2, labels2 = deform(ct, labels, random_transform(ct.grid, rng))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ts2d_xray.image import Grid, LabelMap, Volume
from ts2d_xray.records import record_to_dict

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["DeformSpec", "deform", "random_transform"]

#: HU of the space the deformation pulls in from outside the scan.
AIR_HU = -1024.0
#: Grid of the dense displacement field that stands in for the transform, mm.
FIELD_SPACING_MM = 6.0


@dataclass(frozen=True)
class DeformSpec:
    """Ranges of the random deformation.

    Attributes:
        rotation_deg: Rotation about each patient axis, uniform in ± this, degrees.
        scale: Scale factor per axis, uniform in ``(low, high)``.
        elastic_mm: Standard deviation of the B-spline control point displacements, mm.
        control_points: B-spline mesh size per axis (fewer: smoother warps).
        spacing_mm: Isotropic voxel size of the output in mm; None keeps the input's.
    """

    rotation_deg: float = 5.0
    scale: tuple[float, float] = (0.9, 1.1)
    elastic_mm: float = 6.0
    control_points: int = 4
    spacing_mm: float | None = 1.5

    def __post_init__(self) -> None:
        if not 0 <= self.rotation_deg <= 45:
            raise ValueError(f"rotation_deg must be in [0, 45] degrees, got {self.rotation_deg}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if self.elastic_mm < 0:
            raise ValueError(f"elastic_mm must be >= 0 mm, got {self.elastic_mm}")
        if not isinstance(self.control_points, int) or self.control_points < 1:
            raise ValueError(f"control_points must be an integer >= 1, got {self.control_points!r}")
        if self.spacing_mm is not None and not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0 mm or None, got {self.spacing_mm}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{field: value}`` (tuples as lists)."""
        return record_to_dict(self)


def _reference(grid: Grid, spacing_mm: float | None) -> sitk.Image:
    """A SimpleITK image on the output grid: the input's orientation and extent."""
    import SimpleITK as sitk

    spacing = np.asarray(grid.spacing, float)
    size_xyz = np.asarray(grid.shape[::-1], float)
    new_spacing = spacing if spacing_mm is None else np.full(3, float(spacing_mm))
    new_size = np.maximum(1, np.round(size_xyz * spacing / new_spacing)).astype(int)
    new_spacing = size_xyz * spacing / new_size  # the extent stays exact
    # Voxel edges stay put: the first centre moves by half the spacing change.
    origin = np.asarray(grid.origin) + grid.matrix @ ((new_spacing - spacing) / 2)
    ref = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in new_spacing])
    ref.SetOrigin([float(o) for o in origin])
    ref.SetDirection(grid.direction)
    return ref


def random_transform(grid: Grid, rng: np.random.Generator, spec: DeformSpec = DeformSpec()
                     ) -> tuple[sitk.CompositeTransform, dict[str, Any]]:
    """A random affine + B-spline SimpleITK transform for a volume on ``grid``.

    Returns:
        ``(transform, params)``: a ``sitk.CompositeTransform`` (output -> input points,
        LPS mm) and a JSON-serialisable record of what was drawn.
    """
    import SimpleITK as sitk

    matrix = grid.matrix
    extent = (np.asarray(grid.shape[::-1]) - 1) * np.asarray(grid.spacing)
    centre = np.asarray(grid.origin) + matrix @ (extent / 2)
    angles = rng.uniform(-spec.rotation_deg, spec.rotation_deg, 3)
    scales = rng.uniform(*spec.scale, 3)
    affine = sitk.AffineTransform(3)
    affine.SetCenter([float(c) for c in centre])
    rx, ry, rz = np.radians(angles)
    rot = _rotation(rx, ry, rz)
    affine.SetMatrix([float(v) for v in (rot @ np.diag(scales)).ravel()])
    ref = _reference(grid, None)
    bspline = sitk.BSplineTransformInitializer(ref, [spec.control_points] * 3, 3)
    displacement = rng.normal(0.0, spec.elastic_mm, len(bspline.GetParameters()))
    bspline.SetParameters([float(d) for d in displacement])
    # ITK composite transforms apply the last added first: points go through the
    # elastic warp, then the affine map.
    transform = sitk.CompositeTransform([affine, bspline])
    params = {"rotation_deg": [float(a) for a in angles], "scale": [float(s) for s in scales],
              "elastic_rms_mm": float(np.sqrt(np.mean(displacement ** 2))) if displacement.size else 0.0,
              "spec": spec.to_dict()}
    return transform, params


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def deform(
    ct: Volume, labels: LabelMap | None, transform: sitk.Transform, spacing_mm: float | None = DeformSpec.spacing_mm
) -> tuple[Volume, LabelMap | None]:
    """Warp a CT (linear, air outside) and its label layers (nearest) with one transform.

    Args:
        ct: CT in HU.
        labels: Its labels on the same grid, or None.
        transform: A SimpleITK transform, output -> input points (e.g. from
            :func:`random_transform`).
        spacing_mm: Isotropic output voxel size in mm; None keeps the CT's spacing.

    Returns:
        ``(ct, labels)`` on the output grid (the input's orientation and extent).
    """
    import SimpleITK as sitk

    if labels is not None and not labels.grid.matches(ct.grid):
        raise ValueError(f"labels ({labels.grid.describe()}) are not on the CT grid ({ct.grid.describe()})")
    ref = _reference(ct.grid, spacing_mm)
    # A B-spline evaluated at every voxel costs ~7x more than a dense displacement field
    # sampled linearly; at 6 mm the field differs from the exact warp by < 0.5 HU on average.
    coarse = _reference(ct.grid, FIELD_SPACING_MM)
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, coarse.GetSize(),
                                              coarse.GetOrigin(), coarse.GetSpacing(), coarse.GetDirection())
    transform = sitk.DisplacementFieldTransform(field)
    image = ct.to_sitk()
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        image = sitk.Cast(image, sitk.sitkFloat32)
    warped = Volume.from_sitk(sitk.Resample(image, ref, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32),
                              source=ct.source)
    if labels is None:
        return warped, None
    layers = []
    for layer in labels.layers:
        moving = Volume(layer, labels.grid).to_sitk()
        layers.append(sitk.GetArrayFromImage(sitk.Resample(moving, ref, transform, sitk.sitkNearestNeighbor, 0)))
    return warped, LabelMap(np.stack(layers), labels.segments, warped.grid, labels.source)
