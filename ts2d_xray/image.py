"""Image types that carry their physical geometry.

Conventions (used everywhere in ts2d_xray):

* Physical space is DICOM/ITK **LPS**: +x toward the patient's left, +y toward
  posterior, +z toward the head (superior).  Millimetres.
* 3D arrays are in SimpleITK's numpy order ``(z, y, x)`` = ``(k, j, i)``: the last array
  axis is ITK index ``i``.  ``spacing``, ``origin`` and ``direction`` are in ITK index
  order ``(i, j, k)``; ``direction`` is the row-major 3x3 matrix whose column ``n`` is
  the LPS unit vector of index axis ``n``.
* 2D arrays are ``(C, H, W)`` (channels, rows, columns) as displayed: row 0 is the top
  of the image, column 0 its left edge.  :class:`Plane` says where rows and columns
  point in the patient.
* Two display conventions for coronal images (see :data:`DISPLAYS`), both head up:
  ``"radiograph"`` shows the patient's right on the image left (as radiographs are
  read); ``"ts2d"`` shows the patient's left on the image left (as TS2D's projections
  are stored).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import permutations
from os import PathLike
from typing import TYPE_CHECKING, Iterable, Literal, Mapping, Sequence

import numpy as np

from ts2d_xray.errors import InputError

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = [
    "DISPLAYS",
    "Display",
    "Grid",
    "Image2D",
    "LabelMap",
    "Masks",
    "Plane",
    "Volume",
    "nearest_axes",
    "non_finite",
    "require_finite",
    "spacing_pair",
]

Display = Literal["radiograph", "ts2d"]
#: Display conventions: patient direction of increasing column for each.
DISPLAYS: Mapping[str, str] = {"radiograph": "L", "ts2d": "R"}

_LETTERS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "H", (2, -1): "F"}


def patient_direction(vector: Sequence[float] | np.ndarray) -> str:
    """DICOM patient-direction letter (L, R, P, A, H, F) of the dominant LPS axis of a vector."""
    v = np.asarray(vector, dtype=float)
    axis = int(np.argmax(np.abs(v)))
    return _LETTERS[(axis, 1 if v[axis] > 0 else -1)]


def nearest_axes(matrix: np.ndarray) -> tuple[int, ...]:
    """The LPS axis each index axis (column of a direction matrix) lies closest to, all different.

    An assignment, not a per-column choice: in a volume rotated 45 degrees about an
    axis two columns are equally close to two LPS axes, and each must get its own.
    Chosen as the permutation with the largest sum of ``|cosines|`` (the first such one
    on a tie, so the answer is deterministic).
    """
    m = np.abs(np.asarray(matrix, dtype=float))
    n = m.shape[1]
    return max(permutations(range(m.shape[0]), n), key=lambda axes: sum(m[a, k] for k, a in enumerate(axes)))


def require_finite(array: np.ndarray, source: str | PathLike | None) -> None:
    """Refuse an image holding NaN or infinite values (the one policy for every image input).

    Raises:
        InputError: Naming ``source`` (a file, or None for an array given to the API) and
            the count of non-finite values.
    """
    if array.dtype.kind not in "fc" or array.size == 0:
        return
    # min and max propagate NaN and show an infinity without a full-size temporary.
    if np.isfinite(array.min()) and np.isfinite(array.max()):
        return
    raise non_finite(source, int(array.size - np.count_nonzero(np.isfinite(array))), array.size)


def non_finite(source: str | PathLike | None, bad: int, total: int) -> InputError:
    """The error for an image with ``bad`` NaN or infinite values of ``total`` (``source`` None: an array)."""
    return InputError(source if source is not None else "array",
                      f"{bad:,} of {total:,} values are NaN or infinite; an image must hold finite values "
                      "(replace them, e.g. with numpy.nan_to_num, if you know what they stand for)")


def spacing_pair(spacing: float | Sequence[float]) -> tuple[float, float]:
    """``(row_mm, col_mm)`` from one number or a pair.

    Raises:
        ValueError: Not one number or a pair, or a value that is not finite and > 0.
    """
    try:
        pair = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), 2))
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be one number or (row_mm, col_mm); got {spacing!r}") from None
    if not all(np.isfinite(s) and s > 0 for s in pair):
        raise ValueError(f"spacing must be > 0 mm and finite, one number or (row_mm, col_mm); got {spacing!r}")
    return pair


def letter_vector(letter: str) -> tuple[float, float, float]:
    """LPS unit vector of a DICOM patient-direction letter."""
    for (axis, sign), name in _LETTERS.items():
        if name == letter:
            v = [0.0, 0.0, 0.0]
            v[axis] = float(sign)
            return tuple(v)
    raise ValueError(f"patient direction must be one of {sorted(_LETTERS.values())}, got {letter!r}")


@dataclass(frozen=True)
class Grid:
    """A 3D voxel grid in LPS space (ITK conventions, see module docstring).

    Attributes:
        shape: Array shape ``(z, y, x)``.
        spacing: Voxel size in mm along index axes ``(i, j, k)``.
        origin: LPS position in mm of the centre of voxel ``(0, 0, 0)``.
        direction: Row-major 3x3 direction cosines; column ``n`` is index axis ``n``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def matrix(self) -> np.ndarray:
        """3x3 direction matrix (columns are index axes i, j, k in LPS)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def matches(self, other: "Grid", tol: float = 1e-3) -> bool:
        """True when both grids have the same shape and, within ``tol`` mm, geometry."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol, rtol=0)
            and np.allclose(self.origin, other.origin, atol=tol * 10, rtol=0)
            and np.allclose(self.direction, other.direction, atol=tol, rtol=0)
        )

    def describe(self) -> str:
        orient = "".join(patient_direction(self.matrix[:, n]) for n in range(3))
        sp = "x".join(f"{s:g}" for s in self.spacing)
        return f"{self.shape[::-1]} voxels (i, j, k) at {sp} mm, index axes toward {orient}"


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scalar image (CT in HU, or an integer label map) on a :class:`Grid`.

    Attributes:
        array: ``(z, y, x)`` numpy array.
        grid: Geometry of the array.
        source: Where it was read from, for messages.
    """

    array: np.ndarray
    grid: Grid
    source: str | None = None

    def __post_init__(self) -> None:
        if self.array.shape != self.grid.shape:
            raise ValueError(f"array shape {self.array.shape} != grid shape {self.grid.shape}")

    @classmethod
    def from_sitk(cls, image: sitk.Image, source: str | None = None) -> "Volume":
        """Wrap a 3D scalar SimpleITK image; the array shares its buffer (:func:`~ts2d_xray.sitk_arrays.pixels`)."""
        from ts2d_xray.sitk_arrays import pixels

        array = pixels(image)
        grid = Grid(
            shape=tuple(array.shape),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )
        return cls(array, grid, source)

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image with the same pixels and geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.grid.spacing)
        image.SetOrigin(self.grid.origin)
        image.SetDirection(self.grid.direction)
        return image


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Possibly overlapping 3D structures stored as label layers (as 3D Slicer does).

    Non-overlapping structures share a layer; each structure is one value in one layer.
    A TotalSegmentator multilabel file is one layer; a folder of binary masks is packed
    into as few layers as its overlaps allow.

    Attributes:
        layers: ``(L, z, y, x)`` unsigned integer array, 0 = background.
        segments: Structure name -> ``(layer, value)``.
        grid: Geometry shared by all layers.
        source: Where it was read from, for messages.
    """

    layers: np.ndarray
    segments: Mapping[str, tuple[int, int]]
    grid: Grid
    source: str | None = None

    def __post_init__(self) -> None:
        if self.layers.ndim != 4 or self.layers.shape[1:] != self.grid.shape:
            raise ValueError(f"layers must be (L, *{self.grid.shape}), got {self.layers.shape}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.segments)

    def mask(self, name: str) -> np.ndarray:
        """Boolean ``(z, y, x)`` mask of one structure."""
        if name not in self.segments:
            raise KeyError(f"{name!r} not in label map (has {len(self.segments)} structures)")
        layer, value = self.segments[name]
        return self.layers[layer] == value


@dataclass(frozen=True)
class Plane:
    """Geometry of a 2D image of the patient.

    Attributes:
        shape: ``(H, W)`` rows and columns.
        spacing: ``(row_spacing, column_spacing)`` in mm: the distance between
            neighbouring rows, then between neighbouring columns (DICOM PixelSpacing
            order).  For a radiograph this is at the patient (magnification removed)
            where the file says so; ``Image2D.meta["spacing_source"]`` tells.
        col_dir: LPS unit vector along which the column index increases (left to right
            on screen).
        row_dir: LPS unit vector along which the row index increases (top to bottom).
        origin: LPS position in mm of the centre of pixel (0, 0), where known (CT
            projections); None for radiographs.
    """

    shape: tuple[int, int]
    spacing: tuple[float, float]
    col_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    row_dir: tuple[float, float, float] = (0.0, 0.0, -1.0)
    origin: tuple[float, float, float] | None = None

    @property
    def orientation(self) -> tuple[str, str]:
        """DICOM PatientOrientation: directions of increasing column and row, e.g. ``("L", "F")``."""
        return patient_direction(self.col_dir), patient_direction(self.row_dir)

    @property
    def display(self) -> Display | None:
        """The display convention this plane follows, or None (not head-up coronal)."""
        col, row = self.orientation
        if row != "F":
            return None
        return {"L": "radiograph", "R": "ts2d"}.get(col)

    @property
    def extent(self) -> tuple[float, float]:
        """Physical size ``(height, width)`` in mm, pixel edge to pixel edge."""
        return self.shape[0] * self.spacing[0], self.shape[1] * self.spacing[1]

    def flipped(self, rows: bool, cols: bool) -> "Plane":
        """The plane of the same image with rows and/or columns reversed."""
        origin = None if self.origin is None else np.asarray(self.origin, dtype=float)
        col_dir, row_dir = np.asarray(self.col_dir), np.asarray(self.row_dir)
        if cols:
            if origin is not None:
                origin = origin + col_dir * self.spacing[1] * (self.shape[1] - 1)
            col_dir = -col_dir
        if rows:
            if origin is not None:
                origin = origin + row_dir * self.spacing[0] * (self.shape[0] - 1)
            row_dir = -row_dir
        return replace(
            self,
            col_dir=tuple(float(v) for v in col_dir),
            row_dir=tuple(float(v) for v in row_dir),
            origin=None if origin is None else tuple(float(v) for v in origin),
        )


@dataclass(frozen=True, eq=False)
class Image2D:
    """A 2D image: a radiograph (1 channel) or a coronal CT projection (2 channels).

    Attributes:
        array: ``(C, H, W)`` float32.  Radiographs: 0 = black, 1 = white as displayed.
            Projections: HU.
        plane: Geometry.
        channels: Channel names, e.g. ``("mean", "max")`` or ``("xray",)``.
        meta: Provenance: source file, how spacing and orientation were obtained, etc.
    """

    array: np.ndarray
    plane: Plane
    channels: tuple[str, ...]
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or self.array.shape[1:] != self.plane.shape:
            raise ValueError(f"array must be (C, *{self.plane.shape}), got {self.array.shape}")
        if len(self.channels) != self.array.shape[0]:
            raise ValueError(f"{len(self.channels)} channel names for {self.array.shape[0]} channels")


@dataclass(frozen=True, eq=False)
class Masks:
    """Multi-label 2D masks: a pixel may belong to several structures.

    Attributes:
        array: ``(K, H, W)`` bool, one layer per structure.
        names: The K structure names.
        plane: Geometry, the same as the image they belong to.
    """

    array: np.ndarray
    names: tuple[str, ...]
    plane: Plane

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or self.array.shape[1:] != self.plane.shape:
            raise ValueError(f"array must be (K, *{self.plane.shape}), got {self.array.shape}")
        if len(self.names) != self.array.shape[0]:
            raise ValueError(f"{len(self.names)} names for {self.array.shape[0]} masks")
        if len(set(self.names)) != len(self.names):
            raise ValueError("structure names must be unique")

    def mask(self, name: str) -> np.ndarray:
        """Boolean ``(H, W)`` mask of a structure; derived structures are unions."""
        from ts2d_xray.labels import expand

        if name in self.names:
            return self.array[self.names.index(name)]
        members = [m for m in expand(name) if m in self.names]
        if not members:
            raise KeyError(f"{name!r}: none of its structures is among the {len(self.names)} masks")
        return np.any(self.array[[self.names.index(m) for m in members]], axis=0)

    def select(self, names: Iterable[str], *, missing: Literal["raise", "skip"] = "raise") -> "Masks":
        """Masks of the given structures, in that order; derived structures are unions.

        Args:
            names: Structure names (catalog classes, derived names, or any name among
                :attr:`names`).
            missing: What to do with a name none of whose structures is among the masks
                (e.g. ``liver`` from a chest-only model): ``"raise"`` a KeyError (the
                default) or ``"skip"`` it, so the result may hold fewer names.

        Raises:
            ValueError: A name unknown to the catalog (with suggestions), or a bad ``missing``.
            KeyError: With ``missing="raise"``, a name whose structures are all absent.
        """
        from ts2d_xray.labels import expand

        if missing not in ("raise", "skip"):
            raise ValueError(f"missing must be 'raise' or 'skip', got {missing!r}")
        names = tuple(names)
        for n in names:
            if n not in self.names:
                expand(n)  # unknown names raise ValueError with suggestions
        if missing == "skip":
            names = tuple(n for n in names if n in self.names or any(m in self.names for m in expand(n)))
        return Masks(np.stack([self.mask(n) for n in names]) if names else self.array[:0], names, self.plane)

    def to_v2(self) -> "Masks":
        """Rename TotalSegmentator v1 structures to v2's classes.

        The five v1 heart chambers become one ``heart`` mask (their union);
        ``face`` and ``pulmonary_artery``, which v2's ``total`` task lacks, are dropped.
        Names that are already v2 classes, and radiographic structures (the lung fields),
        are kept.
        """
        from ts2d_xray.labels import radiographic_names, structure, v1_to_v2

        groups: dict[str, list[int]] = {}
        for k, name in enumerate(self.names):
            kept = name in radiographic_names() or structure(name).v2_id is not None
            target = name if kept else v1_to_v2(name)
            if target is not None:
                groups.setdefault(target, []).append(k)
        names = tuple(groups)
        array = np.stack([np.any(self.array[idx], axis=0) for idx in groups.values()]) if names else self.array[:0]
        return Masks(array, names, self.plane)
