"""The first and last steps of every 2D image reader: which format a file is, and the display flip.

Formats come from the file name (:mod:`ts2d_xray.kinds`: ``ITK_FORMATS``,
``PIL_FORMATS``), else from the DICOM Part 10 preamble, whatever the file's name.
"""

from __future__ import annotations

import struct
from os import PathLike
from pathlib import Path

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import brief
from ts2d_xray.image import DISPLAYS, Display, Image2D
from ts2d_xray.kinds import DICOM_SUFFIXES, ITK_FORMATS, PIL_FORMATS, format_suffix
from ts2d_xray.orientation import to_display

__all__ = ["check_png", "image_file_format", "in_display"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_file_format(path: str | PathLike) -> tuple[Path, str]:
    """The path of an existing 2D image file and its format: ``"dicom"`` or a value of ``ITK_FORMATS``/``PIL_FORMATS``.

    Raises:
        InputError: A missing path, a folder, or a file of no supported format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder; expected one image file")
    known = {**PIL_FORMATS, **ITK_FORMATS}
    # A two-part suffix that is no image format of its own (.seg.nrrd) is read by its last part.
    fmt = known.get(format_suffix(path)) or known.get(path.suffix.lower())
    if fmt is not None:
        return path, fmt
    # DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name.
    with open(path, "rb") as f:
        if path.suffix.lower() in DICOM_SUFFIXES or f.read(132)[128:] == b"DICM":
            return path, "dicom"
    supported = sorted({*PIL_FORMATS, *ITK_FORMATS, *DICOM_SUFFIXES})
    raise InputError(path, f"unsupported file type {path.suffix!r}; expected one of {supported}")


def check_png(path: Path) -> None:
    """Refuse a PNG/JPEG file that Pillow calls a size bomb, and a PNG whose chunk checksums (CRC-32) do not match.

    Pillow decodes a damaged PNG without checking them, so a flipped bit in the pixel
    stream would give other pixels silently.  Checking costs one read of the file.
    Pillow refuses, when it opens the header, an image above twice its
    ``Image.MAX_IMAGE_PIXELS`` (a header-only or zlib size bomb): that is an input
    error here too, before any pixel is decoded.  Other problems of a non-PNG file are
    left to its reader.
    """
    from PIL import Image

    with open(path, "rb") as f:
        png = f.read(len(_PNG_SIGNATURE)) == _PNG_SIGNATURE
    try:
        with Image.open(path) as im:
            if png:
                im.verify()
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"image too large to decode ({brief(exc)}); refusing it before reading") from None
    except (SyntaxError, OSError, ValueError, EOFError, struct.error) as exc:
        if png:
            raise InputError(path, f"corrupt PNG file ({brief(exc)})") from None


def in_display(path: Path, image: Image2D, display: Display | None) -> Image2D:
    """``image`` flipped into the ``display`` convention (None: as stored).

    Raises:
        ValueError: An unknown ``display``.
        InputError: A view that has no such display (e.g. a lateral view), naming ``path``.
    """
    if display is None:
        return image
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {list(DISPLAYS)} or None, got {display!r}")
    try:
        return to_display(image, display)
    except ValueError as exc:  # e.g. a lateral view has no coronal display
        raise InputError(path, f"{exc}; pass display=None to keep the stored orientation") from exc
