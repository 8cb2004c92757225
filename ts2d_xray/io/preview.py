"""Overlay previews: a 2D image in grey with multi-label masks in colour and a legend.

Previews show an image exactly as its :class:`~ts2d_xray.image.Plane` is oriented
(row 0 at the top, column 0 on the left); callers choose a display convention with
:func:`~ts2d_xray.orientation.to_display` first.  The top-left corner carries the patient
direction of the image's left edge ("R" for the radiograph convention), as radiographs
are marked.
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ts2d_xray.image import Image2D, Masks, Plane, patient_direction
from ts2d_xray.kinds import format_suffix
from ts2d_xray.io.files import atomic_paths
from ts2d_xray.labels import display_color

if TYPE_CHECKING:
    import PIL.Image
    import PIL.ImageDraw
    import PIL.ImageFont

__all__ = ["draw_measure_lines", "write_preview"]

logger = logging.getLogger(__name__)

_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
#: Small images are enlarged so the shorter side of the display has at least this many pixels.
MIN_DISPLAY_PX = 512
#: Grey window of a CT projection preview: these percentiles of the channel's HU,
#: taken over rays whose value is above :data:`AIR_HU`.
PROJECTION_WINDOW_PERCENTILES = (1.0, 99.8)
#: Projection pixels at or below this (HU) are air or padding and do not set the window.
AIR_HU = -990.0
#: Previews resample to square pixels when row and column spacing differ by more than this fraction.
SQUARE_PIXEL_TOLERANCE = 0.01
#: Smallest legend / orientation-marker font, in display pixels.
MIN_FONT_PX = 10
#: zlib level of preview PNGs: 1 writes a full-size radiograph's preview about three times
#: faster than Pillow's default 6, for a file about a third larger.
PREVIEW_COMPRESSION = 1


def _grey(image: Image2D, channel: int | None) -> np.ndarray:
    """``(H, W)`` display grey in [0, 1] of one channel."""
    n = image.array.shape[0]
    c = 0 if channel is None else channel
    if not 0 <= c < n:
        raise ValueError(f"channel must be in 0..{n - 1} for channels {image.channels}, got {channel}")
    values = image.array[c].astype(np.float64)
    if n == 1:
        lo, hi = 0.0, 1.0  # radiographs are stored 0 = black, 1 = white
    else:
        # Rays through air only (and padding below -1000 HU) would stretch the window.
        inside = values[np.isfinite(values) & (values > AIR_HU)]
        lo, hi = np.percentile(inside, PROJECTION_WINDOW_PERCENTILES) if inside.size else (0.0, 1.0)
    values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _display_shape(plane: Plane) -> tuple[int, int]:
    """``(rows, cols)`` of the display: square pixels, at least :data:`MIN_DISPLAY_PX` on the shorter side."""
    row_sp, col_sp = plane.spacing
    rows, cols = plane.shape
    if abs(row_sp - col_sp) > SQUARE_PIXEL_TOLERANCE * max(row_sp, col_sp):
        px = min(row_sp, col_sp)
        rows, cols = rows * row_sp / px, cols * col_sp / px
    zoom = max(1.0, MIN_DISPLAY_PX / min(rows, cols))
    return round(rows * zoom), round(cols * zoom)


def _overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float) -> None:
    """Blend a colour into ``rgb`` (H, W, 3 float) inside ``mask`` and draw its 1-pixel outline."""
    from scipy import ndimage

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return
    # Inside the mask's bounding box only: the same pixels, a fraction of the work.  The
    # box is tight, so eroding its crop (outside counts as background) finds the same outline.
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    rgb, mask = rgb[box], mask[box]
    c = np.asarray(color, float)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * c
    rgb[mask & ~ndimage.binary_erosion(mask)] = c  # opaque outline: overlaps stay readable


def _with_legend(canvas: PIL.Image.Image, names: list[str], font: PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont,
                 size: int) -> PIL.Image.Image:
    """``canvas`` with a panel on its right: a colour swatch and the name of each structure.

    Names fill columns as tall as the image, so a long list widens the panel instead
    of making it taller than the image.
    """
    from PIL import Image, ImageDraw

    pad = max(2, size // 3)
    line = size + pad
    per_column = max(1, (canvas.height - pad) // line)
    columns = [names[i:i + per_column] for i in range(0, len(names), per_column)]
    measure = ImageDraw.Draw(canvas)
    widths = [size + 3 * pad + int(np.ceil(max(measure.textlength(n, font=font) for n in col))) for col in columns]
    out = Image.new("RGB", (canvas.width + pad + sum(widths), max(canvas.height, pad + line * len(columns[0]))))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    x0 = canvas.width + pad
    for col, width in zip(columns, widths):
        for n, name in enumerate(col):
            y = pad + n * line
            draw.rectangle([x0, y, x0 + size - 1, y + size - 1], fill=display_color(name))
            draw.text((x0 + size + pad, y), name, fill=(255, 255, 255), font=font)
        x0 += width
    return out


def write_preview(
    image: Image2D,
    path: str | PathLike,
    masks: Masks | None = None,
    *,
    alpha: float = 0.45,
    channel: int | None = None,
    legend: bool = True,
    lines: Sequence[Mapping[str, Any]] = (),
    note: str | None = None,
) -> Path:
    """Write an RGB PNG preview: the image in grey with the masks blended in colour.

    The image is shown exactly as its Plane is oriented (row 0 at the top, column 0 on
    the left); flip image and masks with :func:`~ts2d_xray.orientation.to_display` first for
    a display convention.  The top-left corner is marked with the patient direction of
    the image's left edge (e.g. "R" for a radiograph-convention image).  When row and
    column spacing differ by more than 1 %, the display is resampled to square pixels
    of the finer spacing, so that the anatomy does not look stretched; images smaller
    than :data:`MIN_DISPLAY_PX` are enlarged.

    Args:
        image: ``(C, H, W)`` image.  Grey: the chosen channel; a multi-channel CT
            projection (HU) is windowed to its 2nd-99.8th percentiles, a 1-channel
            radiograph shows its [0, 1] values.
        path: ``.png`` output file.
        masks: Optional masks on the image's plane; each non-empty structure is blended
            in its catalog colour with a 1-pixel outline.
        alpha: Opacity of the mask colours, 0-1.
        channel: Channel index to show; default 0 (TS2D's mean channel).
        legend: Add a panel on the right listing the non-empty structures.
        lines: Measurement lines on the image's grid, drawn in white (see
            :func:`draw_measure_lines`), e.g. the CTR's of
            :func:`ts2d_xray.measure.cardiothoracic_ratio`.
        note: A warning printed across the top in red (e.g. why not to trust the masks).

    Returns:
        ``path`` as a Path.
    """
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    _check_preview(path, image.plane, masks, alpha)
    rgb, shown = _blended(image, masks, channel, alpha)
    canvas = Image.fromarray(np.round(rgb, out=rgb).astype(np.uint8), "RGB")
    font_px = max(MIN_FONT_PX, canvas.height // 40)
    font = ImageFont.load_default(size=font_px)
    marker = _OPPOSITE[patient_direction(image.plane.col_dir)]  # patient direction of the left edge
    ImageDraw.Draw(canvas).text((2, 1), marker, fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    draw_measure_lines(canvas, image.plane, lines, note, font)
    if legend and shown:
        canvas = _with_legend(canvas, shown, font, font_px)
    with atomic_paths(path) as (temp,):
        canvas.save(temp, format="PNG", compress_level=PREVIEW_COMPRESSION)
    logger.info("wrote preview %s (%d structures shown)", path, len(shown))
    return path


def draw_measure_lines(canvas: PIL.Image.Image, plane: Plane, lines: Sequence[Mapping[str, Any]],
                       note: str | None = None,
                       font: PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont | None = None) -> None:
    """Draw measurement lines and a warning note onto a preview canvas of ``plane``, in place.

    Each line (``{"row_px", "col_px": [c0, c1], "end_rows_px": [r0, r1]}`` on the
    plane's pixel grid, as :func:`ts2d_xray.measure.horizontal_line` gives it) is a white
    horizontal segment from the left edge of column ``c0`` to the right edge of ``c1``
    at row ``row_px``, with a tick at each end reaching the row where the structure
    has that extreme column.  ``note`` is written across the top in red, after the
    orientation marker.  The canvas may be the display-resampled image (any size).
    """
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(canvas)
    sy, sx = canvas.height / plane.shape[0], canvas.width / plane.shape[1]
    width = max(1, round(min(canvas.size) / 300))
    for line in lines:
        (c0, c1), (r0, r1), row = line["col_px"], line["end_rows_px"], line["row_px"]
        x0, x1, y = c0 * sx, (c1 + 1) * sx, (row + 0.5) * sy
        draw.line([(x0, y), (x1, y)], fill=(255, 255, 255), width=width)
        for x, r in ((x0, r0), (x1, r1)):
            ry = (r + 0.5) * sy
            draw.line([(x, y), (x, ry)], fill=(255, 255, 255), width=width)
            draw.ellipse([x - 2 * width, ry - 2 * width, x + 2 * width, ry + 2 * width], fill=(255, 255, 255))
    if note:
        font = font or ImageFont.load_default(size=max(MIN_FONT_PX, canvas.height // 40))
        x, y = 4 + int(draw.textlength("W ", font=font)), 1  # right of the orientation marker
        for text in _wrapped(draw, note, font, canvas.width - x - 2):
            draw.text((x, y), text, fill=(255, 64, 64), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
            y += int(draw.textbbox((0, 0), text, font=font)[3]) + 2


def _wrapped(draw: PIL.ImageDraw.ImageDraw, text: str,
             font: PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont, width: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer word stands alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _check_preview(path: Path, plane: Plane, masks: Masks | None, alpha: float) -> None:
    """ValueError for a path that is not a PNG, an opacity outside [0, 1], or masks on another plane."""
    if format_suffix(path) != ".png":
        raise ValueError(f"{path}: previews are written as .png")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if masks is not None and (
        masks.plane.shape != plane.shape
        or not np.allclose(masks.plane.col_dir, plane.col_dir, atol=1e-3)
        or not np.allclose(masks.plane.row_dir, plane.row_dir, atol=1e-3)
    ):
        raise ValueError(f"masks plane {masks.plane.shape} {''.join(masks.plane.orientation)} does not match the "
                         f"image plane {plane.shape} {''.join(plane.orientation)}; flip both with to_display")


def _blended(image: Image2D, masks: Masks | None, channel: int | None, alpha: float) -> tuple[np.ndarray, list[str]]:
    """The display ``(rows, cols, 3)`` float RGB in [0, 255] with the non-empty masks blended in, and their names."""
    from PIL import Image

    rows, cols = _display_shape(image.plane)
    grey = Image.fromarray(np.round(_grey(image, channel) * 255).astype(np.uint8))
    if grey.size != (cols, rows):
        grey = grey.resize((cols, rows), Image.BILINEAR)
    rgb = np.empty((rows, cols, 3))
    rgb[...] = np.asarray(grey)[..., None]
    shown = []
    for name, mask in zip(masks.names, masks.array) if masks is not None else ():
        if mask.any():
            big = mask if mask.shape == (rows, cols) else np.asarray(
                Image.fromarray(mask).resize((cols, rows), Image.NEAREST), bool)
            _overlay(rgb, big, display_color(name), alpha)
            shown.append(name)
    return rgb, shown
