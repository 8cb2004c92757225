"""What an input is, how big it is (before reading it), and how CLI arguments become inputs.

Three input kinds, told apart from the header alone:

``"ct"``
    A 3D CT: NIfTI/NRRD/MHA with three non-singleton axes, or a folder holding a DICOM
    series.  Coronal models project it (:func:`ts2d_xray.projection.project_ct`).
``"projection"``
    A 2-channel [mean, max] coronal projection in HU, as TS2D publishes them
    (:func:`ts2d_xray.io.read_projection`).
``"radiograph"``
    A 1-channel 2D image: DICOM CR/DX, PNG/JPEG, or a 2D NRRD/NIfTI/MHA
    (:func:`ts2d_xray.io.read_radiograph`).

The sizes in the header are checked against limits before any pixel is read, so a
file that claims to be enormous is refused without allocating its memory.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import brief
from ts2d_xray.io.itk import sitk_header
from ts2d_xray.io.itk_data import check_declared
from ts2d_xray.kinds import DICOM_SUFFIXES, ITK_FORMATS, InputKind, PIL_FORMATS, format_stem, format_suffix

if TYPE_CHECKING:
    import pydicom
    import SimpleITK as sitk

__all__ = ["InputInfo", "MAX_CT_VOXELS", "MAX_PIXELS", "expand_inputs", "inspect_input", "output_stems"]

log = logging.getLogger(__name__)

#: Largest 2D input, in pixels: the largest radiography detectors (43 x 43 cm at
#: 0.1 mm, about 18.5 million pixels) with room to spare.
MAX_PIXELS = 40_000_000
#: Largest CT, in voxels: 2^31 (4 GiB as int16), e.g. 512 x 512 x 8192 slices.
MAX_CT_VOXELS = 2**31
#: Smallest number of files of one DICOM series for a folder to be read as a CT.
MIN_SERIES_FILES = 2
#: DICOM modalities of projection radiographs: files of these are images, never CT slices.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "MG", "IO", "PX", "XA", "RF"})


@dataclass(frozen=True)
class InputInfo:
    """What the header of an input says.

    Attributes:
        path: The file or DICOM folder.
        kind: ``"ct"``, ``"projection"`` or ``"radiograph"``.
        size: Index sizes from the header: ``(W, H)`` for 2D, ``(i, j, k)`` for a CT.
    """

    path: Path
    kind: InputKind
    size: tuple[int, ...]

    @property
    def count(self) -> int:
        """Pixels (2D) or voxels (CT)."""
        n = 1
        for s in self.size:
            n *= int(s)
        return n


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _dicom_series(folder: Path) -> list[str]:
    """Files of the largest DICOM series of slices in a folder (GDCM's grouping), or [].

    A series of projection radiographs (CR, DX, ...: several views filed together) is
    not a volume and gives [].
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    files = max((reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series), key=len, default=[])
    if files:
        modality = str(_dicom_header(Path(files[0])).get("Modality", "")).upper()
        if modality in RADIOGRAPH_MODALITIES:
            return []
    return list(files)


def inspect_input(path: str | PathLike, *, max_pixels: int = MAX_PIXELS, max_voxels: int = MAX_CT_VOXELS) -> InputInfo:
    """Kind and size of an input from its header, checked against the size limits.

    Raises:
        InputError: Missing path, unsupported or unreadable file, a single CT slice, a
            4D image, an image above ``max_pixels`` / ``max_voxels`` or above
            :data:`~ts2d_xray.io.itk_data.MAX_IMAGE_BYTES` once decoded, or a
            NIfTI/NRRD/MHA file too short to hold the pixels its header declares.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    reader = None
    if path.is_dir():
        files = _dicom_series(path)
        if len(files) < MIN_SERIES_FILES:
            raise InputError(path, "folder holds no DICOM series (a CT is a file or a DICOM series folder)")
        rows, cols = _dicom_header_size(Path(files[0]))
        info = InputInfo(path, "ct", (cols, rows, len(files)))
    else:
        suffix = format_suffix(path)
        if path.stat().st_size == 0:
            raise InputError(path, "file is empty (0 bytes): truncated, or not written completely")
        if suffix in ITK_FORMATS:
            info, reader = _itk_info(path)
        elif suffix in PIL_FORMATS:
            info = InputInfo(path, "radiograph", _pil_size(path, max_pixels))
        elif _is_dicom_file(path):
            info = _dicom_info(path)
        else:
            supported = sorted({*ITK_FORMATS, *PIL_FORMATS, *DICOM_SUFFIXES})
            raise InputError(path, f"unsupported file type {path.suffix!r}; expected one of {supported} "
                                   "or a DICOM series folder")
    limit, unit = (max_voxels, "voxels") if info.kind == "ct" else (max_pixels, "pixels")
    if info.count > limit:
        size = " x ".join(map(str, info.size))
        raise InputError(path, f"image of {size} = {info.count:,} {unit} exceeds the limit of {limit:,} "
                               f"{unit}; refusing it before reading (raise max_{unit} if this is intended)")
    if reader is not None:
        check_declared(path, reader)  # bytes once decoded; a file too short for its header (truncated, a bomb)
    return info


def _itk_info(path: Path) -> tuple[InputInfo, sitk.ImageFileReader]:
    """What the header says, and the reader that read it (whose size checks come after the count limits)."""
    reader = sitk_header(path, max_bytes=None)
    size, components = tuple(reader.GetSize()), reader.GetNumberOfComponents()
    non_singleton = [s for s in size if s > 1]
    if components == 2:
        if len(non_singleton) > 2:
            raise InputError(path, f"a 2-channel image of size {size} is 3D; a TS2D projection is 2D")
        return InputInfo(path, "projection", size), reader
    if components != 1:
        raise InputError(path, f"{components} components per pixel; expected 1 (CT or radiograph) or 2 (projection)")
    if len(size) == 3 and len(non_singleton) == 3:
        return InputInfo(path, "ct", size), reader
    if len(size) > 3:
        raise InputError(path, f"this is a {len(size)}D image {size}; expected a 3D CT or a 2D image")
    if len(non_singleton) < 2 and len(size) == 3:
        raise InputError(path, f"image of size {size} has fewer than 2 non-singleton axes")
    return InputInfo(path, "radiograph", size), reader


def _pil_size(path: Path, max_pixels: int) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            return tuple(im.size)
    except Image.DecompressionBombError as err:  # PIL refuses > 2x its own limit at open
        raise InputError(path, f"image exceeds the limit of {max_pixels:,} pixels ({err}); refusing it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"not a readable PNG/JPEG image ({brief(err)})") from None


def _dicom_header(path: Path) -> pydicom.Dataset:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types for corrupt files
        raise InputError(path, f"not a readable DICOM file ({brief(err)})") from None


def _dicom_header_size(path: Path) -> tuple[int, int]:
    ds = _dicom_header(path)
    try:
        return int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError(path, "DICOM without Rows/Columns: not an image") from None


def _dicom_info(path: Path) -> InputInfo:
    ds = _dicom_header(path)
    if str(ds.get("Modality", "")).upper() in ("CT", "MR", "PT"):
        raise InputError(path, f"a single {ds.Modality} slice; pass the folder holding the whole series")
    rows, cols = _dicom_header_size(path)
    frames = int(ds.get("NumberOfFrames") or 1)
    return InputInfo(path, "radiograph", (cols, rows) if frames == 1 else (cols, rows, frames))


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in a folder (not a DICOM series), sorted; sidecars and hidden files skipped."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        suffix = format_suffix(p)
        if suffix in ITK_FORMATS or suffix in PIL_FORMATS or _is_dicom_file(p):
            out.append(p)
    return out


def expand_inputs(args: Sequence[str | PathLike]) -> list[Path]:
    """Input paths from CLI arguments: files, folders and glob patterns, in order, without repeats.

    * A file is one input.
    * A folder holding a DICOM series (at least :data:`MIN_SERIES_FILES` files of one
      series, the largest if several) is one CT input; any other folder gives every
      image file directly in it (NIfTI/NRRD/MHA, PNG/JPEG, DICOM), sorted by name.
    * A pattern with ``*``, ``?`` or ``[`` that is not an existing path is expanded
      (``**`` recursively).

    Raises:
        InputError: A missing path, a pattern that matches nothing, a folder without images.
    """
    out: list[Path] = []
    for arg in args:
        path = Path(arg).expanduser()
        if not path.exists() and _has_glob(str(arg)):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            if not matches:
                raise InputError(path, "no file matches this pattern")
            found = []
            for m in matches:
                found += expand_inputs([m]) if m.is_dir() else [m]
        elif path.is_dir():
            found = [path] if len(_dicom_series(path)) >= MIN_SERIES_FILES else _image_files(path)
            if not found:
                raise InputError(path, "folder holds no images and no DICOM series")
        elif path.exists():
            found = [path]
        else:
            raise InputError(path, "no such file or folder")
        out += [p for p in found if p not in out]
    return out


def output_stems(paths: Sequence[Path]) -> list[str]:
    """One output folder name per input: the file name without its format suffix, made unique.

    ``ct.nii.gz`` -> ``ct``; a DICOM folder -> its name; repeats get ``_2``, ``_3``, ...
    (when two inputs share a name, the parent folder is prefixed first).
    """
    def stem(p: Path) -> str:
        name = p.name if p.is_dir() else format_stem(p)
        return name.strip(". ") or "input"

    stems = [stem(p) for p in paths]
    counts = {s: stems.count(s) for s in stems}
    stems = [f"{p.parent.name}_{s}" if counts[s] > 1 and p.parent.name else s for p, s in zip(paths, stems)]
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return out
