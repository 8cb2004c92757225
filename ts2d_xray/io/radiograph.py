"""Read X-ray radiographs as :class:`~ts2d_xray.image.Image2D`.

Radiographs (DICOM, PNG/JPEG, 2D NRRD/NIfTI/MHA): one channel ``("xray",)``, float32 in
[0, 1], 1 = white as displayed (bone bright).  Arrays are ``(1, H, W)``, by default
flipped into the ``"radiograph"`` display convention (head up, patient's right on the
image left); TS2D projections have their own reader (:mod:`ts2d_xray.io.projection`).
``Image2D.meta`` says how spacing and orientation were obtained; every guess also
raises a ``UserWarning`` naming the file.

Example:
    >>> from ts2d_xray.io.radiograph import read_radiograph
    >>> image = read_radiograph("chest.dcm")  # doctest: +SKIP
    >>> image.channels, image.plane.display  # doctest: +SKIP
    (('xray',), 'radiograph')
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Display, Image2D, Plane, letter_vector, require_finite
from ts2d_xray.io.files import brief
from ts2d_xray.io.image_file import check_png, image_file_format, in_display
from ts2d_xray.io.itk import read_itk_plane, sitk_header
from ts2d_xray.kinds import CHANNELS

if TYPE_CHECKING:
    import pydicom

__all__ = ["ASSUMED_ORIENTATION", "FALLBACK_FIELD_OF_VIEW_MM", "MIN_CHEST_FIELD_MM", "read_radiograph"]

#: Field of view in mm assumed for the longest image side when a file gives no usable
#: pixel spacing: 43 cm, the long side of the common 35 x 43 cm (14 x 17 in) and
#: 43 x 43 cm radiography detectors.  Only a rough scale: real fields vary (18-43 cm).
FALLBACK_FIELD_OF_VIEW_MM = 430.0
_FALLBACK_SOURCE = f"fallback: {FALLBACK_FIELD_OF_VIEW_MM:g} mm field of view"

#: The smallest field of view (mm, longest side) that a chest radiograph's pixel spacing may
#: give: an adult chest is about 300 mm wide and chest detectors are 350-430 mm.  A smaller
#: field comes from an image downsized without its spacing updated (the NIH ChestX-ray14
#: films are 1024 x 1024 copies whose DICOM versions keep the original's 0.168 mm, a 172 mm
#: field); such a spacing is set aside and the fallback used, with a warning.
MIN_CHEST_FIELD_MM = 200.0

#: PatientOrientation assumed when a file has none: the radiograph convention of a PA or
#: AP chest film as displayed, columns toward the patient's left, rows toward the feet.
ASSUMED_ORIENTATION = ("L", "F")
_ASSUMED_SOURCE = "assumed radiograph convention"

_Spacing = tuple[float, float]  # (row_mm, col_mm)
_Vector = tuple[float, float, float]  # LPS unit vector

def read_radiograph(
    path: str | PathLike, *, display: Display | None = "radiograph", invert: bool | None = None,
    spacing: tuple[float, float] | None = None,
) -> Image2D:
    """Read a one-channel radiograph.

    DICOM: Modality LUT (rescale or Modality LUT Sequence), then VOI LUT (VOI LUT
    Sequence, else WindowCenter/Width, else min-max of the data), scaled to [0, 1] by the
    output range of that VOI transform, then inverted when the header says so
    (MONOCHROME1, or PresentationLUTShape INVERSE; a MONOCHROME1 DX with INVERSE is
    inverted once).  PNG/JPEG: grey (luma for colour), 8 bit / 255, 16 bit / 65535.
    NRRD/NIfTI/MHA (2D, or 3D with one singleton axis): min-max to [0, 1] (no display
    window in these formats); 3D geometry is the header's LPS, 2D axes are taken as LPS
    x and -z (toward the patient's left and feet), with a warning.

    Args:
        path: The image file.
        display: Display convention to flip into, or None to keep the stored order.
        invert: Override the header's inversion.  Trap: some files say MONOCHROME1
            without inverted pixels (e.g. ``siim_nih_cr_chest_FAKE_monochrome1.dcm``);
            the default follows the header, which is correct DICOM, so such a file
            comes out negative unless ``invert=False``.
        spacing: ``(row_mm, col_mm)`` at the patient, overriding the file.

    Returns:
        Image2D, array ``(1, H, W)`` float32 in [0, 1], 1 = white as displayed; meta
        ``source``, ``format``, ``spacing_source``, ``orientation_source`` (DICOM also
        ``photometric``, ``inverted``, ``voi`` and the header's facts of :func:`_dicom_facts`:
        ``modality``, ``body_part_examined``, ``view_position``, ``patient_orientation``).  Missing
        spacing is guessed from :data:`FALLBACK_FIELD_OF_VIEW_MM`, missing orientation
        taken as :data:`ASSUMED_ORIENTATION`, each with a warning.  So is the spacing of a
        chest film (BodyPartExamined CHEST) whose field would be under
        :data:`MIN_CHEST_FIELD_MM`: meta ``spacing_rejected`` says why.

    Raises:
        InputError: Missing, unreadable or unsupported file; multi-frame, colour or non-image
            DICOM; a 3D volume; an empty image; a non-coronal view with ``display`` set.
    """
    path, fmt = image_file_format(path)
    if fmt == "dicom":
        grey, plane, meta = _read_dicom(path, invert, spacing)
    elif fmt in ("png", "jpeg"):
        grey, plane, meta = _read_pil(path, spacing)
    else:
        grey, plane, meta = _read_itk(path, spacing)
    meta = {"source": str(path), "format": fmt, **meta}
    image2d = Image2D(grey[None].astype(np.float32), plane, CHANNELS["xray"], meta)
    return in_display(path, image2d, display)


# --- DICOM ------------------------------------------------------------------------
def _read_dicom(path: Path, invert: bool | None, spacing: _Spacing | None) -> tuple[np.ndarray, Plane, dict[str, Any]]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise InputError(path, f"not a readable DICOM file ({brief(exc)})") from exc
    if "PixelData" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        raise InputError(path, f"DICOM with no pixel data ({sop}): not an image, or a truncated file")
    frames = int(ds.get("NumberOfFrames") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if frames > 1:
        raise InputError(path, f"multi-frame DICOM ({frames} frames); expected a single radiograph")
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(path, f"colour DICOM ({photometric}); expected a greyscale radiograph")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # decoder errors vary by transfer syntax and plugin
        raise InputError(path, f"cannot decode DICOM pixels ({brief(exc)})") from exc
    if raw.ndim != 2 or raw.size == 0:
        raise InputError(path, f"empty or non-2D DICOM pixel data, shape {raw.shape}")

    values = apply_modality_lut(raw, ds)
    require_finite(np.asarray(values), path)  # float pixel data, or a rescale that overflows
    grey, voi = _voi_to_unit(path, values, ds)
    # MONOCHROME1 means "0 is white"; INVERSE asks for the same flip on a MONOCHROME2
    # image.  A DX stored as MONOCHROME1 must carry INVERSE too: the same single flip.
    lut_shape = str(ds.get("PresentationLUTShape", "")).upper()
    inverted = (photometric == "MONOCHROME1" or lut_shape == "INVERSE") if invert is None else bool(invert)
    if inverted:
        grey = 1.0 - grey

    found, source = _dicom_spacing(ds)
    rejected = _too_small_for_a_chest(found, source, raw.shape, ds.get("BodyPartExamined"))
    if rejected:
        found, source = None, rejected
    spacing, spacing_source = _resolve_spacing(path, found, source, raw.shape, spacing)
    col_dir, row_dir, orientation_source = _dicom_orientation(path, ds.get("PatientOrientation"))
    meta = {"spacing_source": spacing_source, "orientation_source": orientation_source,
            **({"spacing_rejected": rejected} if rejected and spacing_source != "given" else {}),
            "photometric": photometric, "inverted": inverted, "voi": voi,
            "invert_source": "header" if invert is None else "given", **_dicom_facts(ds)}
    return grey, Plane(tuple(raw.shape), spacing, col_dir, row_dir), meta


def _dicom_facts(ds: pydicom.Dataset) -> dict[str, str | list[str]]:
    """What the header says about the examination, as written (for the report's trust checks).

    ``modality`` always; ``body_part_examined``, ``view_position`` and
    ``patient_orientation`` (the two values, e.g. ``["L", "F"]``) when present and not
    empty.  Nothing is interpreted here: :mod:`ts2d_xray.segment.trust` judges them.
    """
    facts: dict[str, str | list[str]] = {"modality": str(ds.get("Modality", ""))}
    for keyword, key in (("BodyPartExamined", "body_part_examined"), ("ViewPosition", "view_position")):
        value = str(ds.get(keyword) or "").strip()
        if value:
            facts[key] = value
    orientation = ds.get("PatientOrientation")
    values = [orientation] if isinstance(orientation, str) else list(orientation or [])
    values = [str(v).strip().upper() for v in values]
    if any(values):
        facts["patient_orientation"] = values
    return facts


def _voi_to_unit(path: Path, values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, str]:
    """Apply the VOI transform and scale its output range to [0, 1]; also say which."""
    from pydicom.pixels import apply_voi_lut

    if ds.get("VOILUTSequence"):
        entries, first, _ = ds.VOILUTSequence[0].LUTDescriptor
        # The LUT's own entries bound its output (whatever bit depth it declares).
        probe, voi = np.arange(first, first + (entries or 2**16)), "VOI LUT Sequence"
        values = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        # Inputs far outside any window give the windowing's output limits.
        probe, voi = np.array([-1e30, 1e30]), f"window {ds.WindowCenter}/{ds.WindowWidth}"
    else:
        return _min_max(values), "min-max"
    try:
        with np.errstate(over="ignore"):  # SIGMOID windowing of the probe overflows to its limit
            out, limits = apply_voi_lut(values, ds), apply_voi_lut(probe, ds)
    except (ValueError, NotImplementedError) as exc:  # e.g. width < 1, odd LUT depth
        warnings.warn(f"{path}: unusable VOI ({exc}); using min-max of the data", stacklevel=4)
        return _min_max(values), "min-max (VOI unusable)"
    lo, hi = float(np.min(limits)), float(np.max(limits))
    if hi <= lo:
        return np.zeros(values.shape, np.float32), voi
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), voi


def _dicom_spacing(ds: pydicom.Dataset) -> tuple[_Spacing | None, str]:
    """(spacing, source) at the patient, or (None, why there is none)."""
    pixel = _positive_pair(ds.get("PixelSpacing"))
    if pixel:
        return pixel, "PixelSpacing"
    imager = _positive_pair(ds.get("ImagerPixelSpacing"))
    if imager:
        # ImagerPixelSpacing is at the detector; the estimated magnification maps it to the patient.
        magnification = _positive(ds.get("EstimatedRadiographicMagnificationFactor"))
        if magnification:
            return tuple(s / magnification for s in imager), "ImagerPixelSpacing/magnification"
        return imager, "ImagerPixelSpacing (detector plane)"
    if "PixelSpacing" in ds or "ImagerPixelSpacing" in ds:
        return None, (f"invalid PixelSpacing {ds.get('PixelSpacing')} / "
                      f"ImagerPixelSpacing {ds.get('ImagerPixelSpacing')}")
    return None, "no PixelSpacing or ImagerPixelSpacing"


def _too_small_for_a_chest(found: _Spacing | None, source: str, shape: tuple[int, ...], body_part: Any) -> str | None:
    """Why a chest film's spacing cannot be right (a field under :data:`MIN_CHEST_FIELD_MM`), else None."""
    if found is None or str(body_part or "").strip().upper() != "CHEST":
        return None
    rows_mm, cols_mm = (n * s for n, s in zip(shape, found))
    if max(rows_mm, cols_mm) >= MIN_CHEST_FIELD_MM:
        return None
    return (f"{source} {found[0]:g} x {found[1]:g} mm makes this chest film {cols_mm:.0f} x {rows_mm:.0f} mm, "
            f"under the {MIN_CHEST_FIELD_MM:g} mm of any adult chest film: likely an original's spacing kept on "
            "a downsized copy")


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _positive_pair(value: Any) -> _Spacing | None:
    if isinstance(value, (str, bytes)):  # one DICOM value, not a pair
        return None
    try:
        pair = tuple(map(_positive, value))
    except TypeError:  # None or a single number
        return None
    return pair if len(pair) == 2 and None not in pair else None


def _dicom_orientation(path: Path, value: Any) -> tuple[_Vector, _Vector, str]:
    """(col_dir, row_dir, source) from PatientOrientation, else the assumed convention."""
    letters = [value] if isinstance(value, str) else list(value or [])
    letters = [str(v).strip().upper() for v in letters]
    # Only the first (most significant) letter of an oblique value such as "LP" is used.
    if len(letters) == 2 and all(v and set(v) <= set("LRAPHF") for v in letters):
        col, row = letter_vector(letters[0][0]), letter_vector(letters[1][0])
        if np.dot(col, row) == 0:
            return col, row, "PatientOrientation"
    return _assumed_orientation(path, f"no valid PatientOrientation ({value!r})")


def _assumed_orientation(path: Path, problem: str) -> tuple[_Vector, _Vector, str]:
    warnings.warn(f"{path}: {problem}; assuming columns toward the patient's left and rows toward the feet",
                  stacklevel=5)
    return letter_vector(ASSUMED_ORIENTATION[0]), letter_vector(ASSUMED_ORIENTATION[1]), _ASSUMED_SOURCE


def _resolve_spacing(path: Path, found: _Spacing | None, problem: str, shape: tuple[int, ...],
                     given: Any) -> tuple[_Spacing, str]:
    """The spacing to use and its source: given, found in the file, or the fallback."""
    if given is not None:
        return _check_spacing(given), "given"
    if found is not None:
        return found, problem
    mm = FALLBACK_FIELD_OF_VIEW_MM / max(shape)
    warnings.warn(f"{path}: {problem}; assuming the longest side spans {FALLBACK_FIELD_OF_VIEW_MM:g} mm "
                  f"({mm:.4g} mm per pixel); pass spacing= if known", stacklevel=4)
    return (mm, mm), _FALLBACK_SOURCE


def _check_spacing(spacing: Any) -> _Spacing:
    pair = _positive_pair(spacing)
    if pair is None:
        raise ValueError(f"spacing must be (row_mm, col_mm), both finite and > 0; got {spacing!r}")
    return pair


# --- PNG / JPEG -------------------------------------------------------------------
def _read_pil(path: Path, spacing: _Spacing | None) -> tuple[np.ndarray, Plane, dict[str, Any]]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_png(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # as a viewer shows a rotated camera JPEG
            if im.mode.startswith("I;16") or im.mode == "I":
                grey, bits = np.asarray(im, dtype=np.float64) / 65535.0, 16
            else:
                # ITU-R 601-2 luma for RGB/P; alpha is dropped.
                grey, bits = np.asarray(im.convert("L"), dtype=np.float64) / 255.0, 8
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"not a readable PNG/JPEG image ({brief(exc)})") from exc
    if grey.size == 0:
        raise InputError(path, "empty image (0 pixels)")
    # PNG pHYs / JPEG DPI describe printing or screens, not the patient: ignored.
    spacing, spacing_source = _resolve_spacing(
        path, None, "no pixel spacing in the file", grey.shape, spacing)
    col_dir, row_dir, orientation_source = _assumed_orientation(path, "no patient orientation in the file")
    meta = {"spacing_source": spacing_source, "orientation_source": orientation_source, "bit_depth": bits}
    return np.clip(grey, 0.0, 1.0), Plane(tuple(grey.shape), spacing, col_dir, row_dir), meta


# --- NRRD / NIfTI / MHA -----------------------------------------------------------
def _read_itk(path: Path, spacing: _Spacing | None) -> tuple[np.ndarray, Plane, dict[str, Any]]:
    reader = sitk_header(path, plane=True)
    if reader.GetNumberOfComponents() != 1:
        raise InputError(path, f"has {reader.GetNumberOfComponents()} components per pixel, a "
                               "radiograph has 1 (a 2-channel TS2D projection: use read_projection)")
    array, plane, meta = read_itk_plane(path, reader)
    if spacing is not None:
        plane, meta["spacing_source"] = replace(plane, spacing=_check_spacing(spacing)), "given"
    return _min_max(array[0]), plane, meta


# --- shared -----------------------------------------------------------------------
def _min_max(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:  # a constant image has no contrast to stretch
        return np.zeros(values.shape, np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)
