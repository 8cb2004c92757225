"""Projection geometry of synthetic radiographs: where the source and detector pixels are.

Frames and conventions (see :mod:`ts2d_xray.image`): LPS patient space in mm.  Before
rotation, the detector's columns run toward the patient's left (+x) and its rows toward
the feet (-z), for AP and PA alike, so every image follows the radiograph display
convention (patient's right on the image left, head up) as a radiograph is read.  The
beam runs anterior to posterior (+y) for AP and posterior to anterior (-y) for PA.

A :class:`View` is rotated about its isocentre by ``rotation`` (degrees, applied as
``R = Rz @ Ry @ Rx``: x = cranio-caudal tilt, y = in-plane rotation, z = rotation of the
patient about the long axis) and shifted by ``translation`` (mm).

Cone beam: the source is ``sid`` mm before the isocentre, the detector ``sdd`` mm from the
source, so anatomy at the isocentre is magnified by ``sdd / sid``.  Parallel beam
("orthographic"): every ray is parallel to the beam axis and nothing is magnified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ts2d_xray.image import Grid, Plane
from ts2d_xray.records import record_from_dict

__all__ = ["View", "ViewRanges", "detector_rays", "rotation_matrix", "view_plane"]

Projection = Literal["cone", "parallel"]
Direction = Literal["AP", "PA"]

# Half-length in mm of the segment a parallel ray covers on each side of the
# isocentre plane: longer than any body.
_PARALLEL_HALF_LENGTH_MM = 2000.0


@dataclass(frozen=True)
class View:
    """One X-ray acquisition geometry.

    Attributes:
        direction: ``"AP"`` (source in front of the patient) or ``"PA"``.
        shape: Detector ``(rows, columns)``.
        detector_spacing: ``(row, column)`` pixel pitch at the detector in mm.
        projection: ``"cone"`` or ``"parallel"``.
        sdd: Source-detector distance in mm (cone beam).
        sid: Source-isocentre distance in mm (cone beam); ``sid < sdd``.
        isocenter: LPS point in mm the beam axis passes through (before translation).
        rotation: Degrees about LPS x, y, z (see the module docstring).
        translation: Shift of the isocentre in mm (LPS).
    """

    direction: Direction
    shape: tuple[int, int]
    detector_spacing: tuple[float, float]
    projection: Projection = "cone"
    sdd: float = 1500.0
    sid: float = 1350.0
    isocenter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.direction not in ("AP", "PA"):
            raise ValueError(f"direction must be 'AP' or 'PA', got {self.direction!r}")
        if self.projection not in ("cone", "parallel"):
            raise ValueError(f"projection must be 'cone' or 'parallel', got {self.projection!r}")
        if min(self.shape) < 1 or min(self.detector_spacing) <= 0:
            raise ValueError(f"detector needs shape >= 1 and spacing > 0, got {self.shape}, {self.detector_spacing}")
        if self.projection == "cone" and not 0 < self.sid < self.sdd:
            raise ValueError(f"cone beam needs 0 < sid < sdd, got sid={self.sid}, sdd={self.sdd}")

    @property
    def magnification(self) -> float:
        """Magnification of anatomy at the isocentre: ``sdd / sid`` (1 for parallel beams)."""
        return self.sdd / self.sid if self.projection == "cone" else 1.0

    @property
    def isocenter_spacing(self) -> tuple[float, float]:
        """Pixel size in mm at the isocentre plane: detector pitch / magnification."""
        m = self.magnification
        return self.detector_spacing[0] / m, self.detector_spacing[1] / m

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rotated ``(col_dir, row_dir, beam_dir)`` LPS unit vectors."""
        beam = np.array([0.0, 1.0 if self.direction == "AP" else -1.0, 0.0])
        r = rotation_matrix(self.rotation)
        return r @ np.array([1.0, 0.0, 0.0]), r @ np.array([0.0, 0.0, -1.0]), r @ beam

    @property
    def center(self) -> np.ndarray:
        """Isocentre after translation (LPS mm)."""
        return np.asarray(self.isocenter, float) + np.asarray(self.translation, float)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable record of the view."""
        return {
            "direction": self.direction, "projection": self.projection, "shape": list(self.shape),
            "detector_spacing_mm": list(self.detector_spacing), "sdd_mm": self.sdd, "sid_mm": self.sid,
            "isocenter_mm": list(self.isocenter), "rotation_deg": list(self.rotation),
            "translation_mm": list(self.translation), "magnification": self.magnification,
            "isocenter_spacing_mm": list(self.isocenter_spacing),
        }


def rotation_matrix(degrees: Sequence[float]) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for rotations in degrees about the LPS x, y and z axes."""
    ax, ay, az = np.deg2rad(np.asarray(degrees, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _pixel_offsets(view: View, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = view.shape
    r = (np.arange(rows) - (rows - 1) / 2) * spacing[0]
    c = (np.arange(cols) - (cols - 1) / 2) * spacing[1]
    return r, c


def view_plane(view: View) -> Plane:
    """The image plane at the isocentre: pixel size at the patient, radiograph orientation.

    ``origin`` is the LPS position of pixel (0, 0) projected onto the plane through the
    isocentre perpendicular to the beam; ``spacing`` is the detector pitch divided by the
    magnification, so a structure at the isocentre measures its true size in mm.
    """
    col_dir, row_dir, _ = view.axes()
    spacing = view.isocenter_spacing
    r, c = _pixel_offsets(view, spacing)
    origin = view.center + c[0] * col_dir + r[0] * row_dir
    return Plane(
        shape=tuple(view.shape),
        spacing=(float(spacing[0]), float(spacing[1])),
        col_dir=tuple(float(v) for v in col_dir),
        row_dir=tuple(float(v) for v in row_dir),
        origin=tuple(float(v) for v in origin),
    )


def detector_rays(view: View) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points of every ray, ``(H, W, 3)`` each, LPS mm (float64).

    Cone beam: all rays start at the source and end on their detector pixel centre.
    Parallel beam: each ray crosses the isocentre plane at its pixel and runs
    :data:`_PARALLEL_HALF_LENGTH_MM` to either side.
    """
    col_dir, row_dir, beam = view.axes()
    center = view.center
    if view.projection == "cone":
        r, c = _pixel_offsets(view, view.detector_spacing)
        detector_center = center + beam * (view.sdd - view.sid)
        targets = detector_center + c[None, :, None] * col_dir + r[:, None, None] * row_dir
        sources = np.broadcast_to(center - beam * view.sid, targets.shape).copy()
        return sources, targets
    r, c = _pixel_offsets(view, view.isocenter_spacing)
    plane = center + c[None, :, None] * col_dir + r[:, None, None] * row_dir
    return plane - beam * _PARALLEL_HALF_LENGTH_MM, plane + beam * _PARALLEL_HALF_LENGTH_MM


def _interval(value: float | Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` in float of a number (``low == high``) or a pair."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"range {value} has its low end above its high end")
    return lo, hi


#: Fields of :class:`ViewRanges` that a number may give as a fixed interval.
_INTERVAL_FIELDS = ("sdd_mm", "isocenter_to_detector_mm", "detector_size_mm")


@dataclass(frozen=True)
class ViewRanges:
    """Ranges views are sampled from (a preset's ``"view"`` section).

    Scalars are fixed values; ``[low, high]`` pairs are sampled uniformly.  Rotations
    and translations are symmetric: ``rotation_deg = [5, 5, 8]`` samples each angle in
    ``[-a, a]``.  ``center_on`` picks the isocentre: ``"volume"`` (the CT's centre) or a
    structure name (the centre of its voxels, e.g. ``"lungs"``), falling back to the
    volume centre when the structure is absent.
    """

    projection: Projection = "cone"
    directions: tuple[Direction, ...] = ("PA",)
    sdd_mm: tuple[float, float] = (1500.0, 1800.0)
    isocenter_to_detector_mm: tuple[float, float] = (100.0, 200.0)
    detector_size_mm: tuple[float, float] = (380.0, 430.0)
    shape: tuple[int, int] = (512, 512)
    rotation_deg: tuple[float, float, float] = (5.0, 5.0, 8.0)
    translation_mm: tuple[float, float, float] = (20.0, 10.0, 30.0)
    center_on: str = "volume"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ViewRanges:
        """Ranges from a preset's ``"view"`` section; a number for an interval field fixes it."""
        if isinstance(d, Mapping):
            d = {key: _interval(value) if key in _INTERVAL_FIELDS else value for key, value in d.items()}
        return record_from_dict(cls, d, what="view settings")

    def sample(self, rng: np.random.Generator, isocenter: Sequence[float], shape: tuple[int, int] | None = None) -> View:
        """Draw one :class:`View` around ``isocenter`` (LPS mm)."""
        shape = tuple(shape or self.shape)
        sdd = rng.uniform(*self.sdd_mm)
        sid = sdd - rng.uniform(*self.isocenter_to_detector_mm)
        size = rng.uniform(*self.detector_size_mm)
        pitch = size / max(shape)  # square pixels; the longer side spans the detector
        rotation = tuple(float(rng.uniform(-a, a)) for a in self.rotation_deg)
        translation = tuple(float(rng.uniform(-t, t)) for t in self.translation_mm)
        direction = self.directions[int(rng.integers(len(self.directions)))]
        return View(
            direction=direction, shape=shape, detector_spacing=(pitch, pitch), projection=self.projection,
            sdd=float(sdd), sid=float(sid), isocenter=tuple(float(v) for v in isocenter),
            rotation=rotation, translation=translation,
        )


def volume_center(grid: Grid) -> np.ndarray:
    """LPS centre in mm of a grid's voxel-centre bounding box."""
    half = (np.asarray(grid.shape[::-1]) - 1) / 2 * np.asarray(grid.spacing)
    return np.asarray(grid.origin) + grid.matrix @ half
