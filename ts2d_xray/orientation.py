"""Exact re-arrangements of 2D planes: transpose and flips, and display conventions.

The one home of "bring this 2D array into that orientation".  An
:class:`Orientation` is a transpose (rows <-> columns) followed by row and column
flips; it moves no pixel value, so it is exact and invertible.  It is chosen from a
:class:`~ts2d_xray.image.Plane` and a target, either a display convention
(:meth:`Orientation.for_display`) or another plane (:meth:`Orientation.between`), and
applied to arrays ``(..., H, W)``, planes, or whole :class:`~ts2d_xray.image.Image2D`
and :class:`~ts2d_xray.image.Masks`.

Display conventions (:data:`~ts2d_xray.image.DISPLAYS`) are head up (rows toward the
feet); ``"radiograph"`` has columns toward the patient's left (the patient's right on
the image left), ``"ts2d"`` toward the patient's right.

Example:
    >>> import numpy as np
    >>> from ts2d_xray.image import Plane
    >>> plane = Plane((2, 3), (1.0, 1.0), col_dir=(-1.0, 0.0, 0.0), row_dir=(0.0, 0.0, -1.0))  # columns toward R
    >>> Orientation.for_display(plane, "radiograph")
    Orientation(transpose=False, flip_rows=False, flip_cols=True)
    >>> Orientation(False, False, True).array(np.arange(6).reshape(2, 3)).tolist()
    [[2, 1, 0], [5, 4, 3]]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from ts2d_xray.image import DISPLAYS, Display, Image2D, Masks, Plane

__all__ = ["DIRECTION_TOL", "Orientation", "to_display"]

#: Largest deviation of a direction cosine from +-1 for two image axes to count as parallel.
DIRECTION_TOL = 1e-3

Item = TypeVar("Item", Image2D, Masks)


@dataclass(frozen=True)
class Orientation:
    """Transpose, then flips, that bring a 2D plane into a target orientation.

    Attributes:
        transpose: Swap rows and columns first.
        flip_rows: Then reverse the rows.
        flip_cols: Then reverse the columns.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    @classmethod
    def for_display(cls, plane: Plane, display: Display, *, allow_transpose: bool = True) -> "Orientation":
        """The orientation that shows ``plane`` in a display convention.

        Raises:
            ValueError: ``display`` is unknown, or the plane is not coronal (e.g. a
                lateral view), or it needs a transpose and ``allow_transpose`` is False.
        """
        if display not in DISPLAYS:
            raise ValueError(f"display must be one of {list(DISPLAYS)}, got {display!r}")
        col, row = plane.orientation
        transpose = col in "HF" and row in "LR"
        if transpose and not allow_transpose:
            raise ValueError(f"image orientation {col}{row} is not a coronal view; cannot show it as {display!r}")
        if transpose:
            col, row = row, col
        if col not in "LR" or row not in "HF":
            raise ValueError(f"image orientation {col}{row} (columns toward {col}, rows toward {row}) "
                             "is not a coronal view (AP or PA)")
        return cls(transpose, row != "F", col != DISPLAYS[display])

    @classmethod
    def between(cls, source: Plane, target: Plane, *, tol: float = DIRECTION_TOL) -> "Orientation":
        """The orientation that gives ``source`` the column and row directions of ``target``.

        Raises:
            ValueError: The two planes' image axes are not parallel within ``tol``.
        """
        src = np.array([source.col_dir, source.row_dir], float)
        dst = np.array([target.col_dir, target.row_dir], float)
        dots = src @ dst.T  # dots[i, j]: source axis i (0 = columns, 1 = rows) . target axis j
        if np.all(np.abs(np.abs(np.diag(dots)) - 1) < tol):
            transpose = False
        elif np.all(np.abs(np.abs(np.diag(dots[::-1])) - 1) < tol):
            transpose = True
            dots = dots[::-1]
        else:
            raise ValueError(f"image axes are not parallel (columns/rows toward {np.round(src, 3).tolist()} "
                             f"vs {np.round(dst, 3).tolist()} in LPS)")
        return cls(transpose, bool(dots[1, 1] < 0), bool(dots[0, 0] < 0))

    def array(self, a: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` -> the oriented array (contiguous)."""
        return np.ascontiguousarray(self.view(a))

    def view(self, a: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` -> the oriented array as a view: writing into it writes into ``a``."""
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        if self.flip_rows:
            a = a[..., ::-1, :]
        if self.flip_cols:
            a = a[..., ::-1]
        return a

    def inverse(self, a: np.ndarray) -> np.ndarray:
        """An oriented ``(..., H', W')`` array -> the original order (contiguous)."""
        if self.flip_cols:
            a = a[..., ::-1]
        if self.flip_rows:
            a = a[..., ::-1, :]
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        return np.ascontiguousarray(a)

    def plane(self, plane: Plane) -> Plane:
        """The plane of the oriented image (same pixels in the patient)."""
        if self.transpose:
            plane = Plane((plane.shape[1], plane.shape[0]), (plane.spacing[1], plane.spacing[0]),
                          plane.row_dir, plane.col_dir, plane.origin)
        return plane.flipped(self.flip_rows, self.flip_cols)

    def apply(self, item: Item) -> Item:
        """An :class:`Image2D` or :class:`Masks`, oriented (the same object when nothing moves)."""
        if self.is_identity:
            return item
        return replace(item, array=self.array(item.array), plane=self.plane(item.plane))

    def describe(self) -> str:
        """What moves, in words (``"transposed, rows flipped"``), or ``"unchanged"``."""
        words = [w for w, on in (("transposed", self.transpose), ("rows flipped", self.flip_rows),
                                 ("columns flipped", self.flip_cols)) if on]
        return ", ".join(words) or "unchanged"


def to_display(item: Item, display: Display) -> Item:
    """Flip an :class:`Image2D` or :class:`Masks` into a display convention.

    Both conventions are head up (rows toward the feet).  ``"radiograph"``: columns
    toward the patient's left, so the patient's right is on the image left.
    ``"ts2d"``: columns toward the patient's right.  Only flips are applied; an image
    whose orientation is not coronal (e.g. a lateral view) raises ValueError.
    """
    return Orientation.for_display(item.plane, display, allow_transpose=False).apply(item)
