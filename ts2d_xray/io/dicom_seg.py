"""Write 2D masks of a DICOM radiograph as a DICOM Segmentation (SEG) with highdicom.

The SEG is a new series of the radiograph's study: it references the source image
(Source Image Sequence of every frame, Referenced Series Sequence), copies its patient
and study, and lies on its pixel grid, so PACS viewers (OHIF, 3D Slicer's DICOM module)
show it on the radiograph.  One segment per structure, in the masks' order, BINARY
(the masks are thresholded already; a fractional SEG would carry no more than they do),
each with the structure's SNOMED CT category, type and laterality
(:func:`~ts2d_xray.io.terminology.segment_terminology`) and its colour as the
recommended display CIELab value (:func:`~ts2d_xray.labels.display_color`, the colour
of the overlays and the seg.nrrd).  Empty structures are segments without frames.

Geometry is the source's, never invented: masks must have the source's rows and
columns in its stored pixel order.  Radiographs have no Frame of Reference; the SEG then
has none either, copies the source's Patient Orientation and carries no Pixel Measures
(its geometry is the referenced image's; see :func:`_conform`).  A source with a Frame
of Reference gives the SEG its valid Pixel Spacing.  A spacing guessed for the report
stays in the report.

Example (``dciodvfy`` from dicom3tools checks the result)::

    write_dicom_seg(result.masks, "cr.dcm", "out/masks.seg.dcm", algorithm="ts2d-xray-xray")
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Masks
from ts2d_xray.io.files import atomic_paths, brief
from ts2d_xray.io.terminology import segment_terminology
from ts2d_xray.labels import Code, display_color

if TYPE_CHECKING:
    import highdicom
    import pydicom

__all__ = ["SERIES_NUMBER_OFFSET", "write_dicom_seg"]

logger = logging.getLogger(__name__)

#: The SEG's Series Number: the source's plus this (this alone when the source has none).
SERIES_NUMBER_OFFSET = 1000
#: Patient and study attributes highdicom copies from the source, which some files carry
#: with values their VR forbids (``PatientAge`` "62" instead of "062Y"): emptied then.
_OPTIONAL_COPIED = ("PatientAge", "PatientSize", "PatientWeight", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "StudyDescription", "PatientBirthDate", "PatientSex")


def write_dicom_seg(masks: Masks, source: str | PathLike, path: str | PathLike, *, algorithm: str,
                    software_version: str | None = None) -> Path:
    """Write ``masks`` (``(K, H, W)`` on the source's pixel grid) as a DICOM SEG of ``source``.

    Args:
        masks: One layer per structure, rows and columns as the source's Pixel Data.
        source: The DICOM radiograph that was segmented (single frame).
        path: Output file (``.dcm``), written atomically.
        algorithm: Algorithm name of every segment (the model's name).
        software_version: The SEG's Software Versions and algorithm version; default
            the installed ts2d-xray's.

    Raises:
        InputError: ``source`` is not a readable single-frame DICOM image.
        ValueError: The masks are not on the source's pixel grid.
    """
    path = Path(path)
    ds = _read_source(Path(source))
    if masks.plane.shape != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(f"masks of {masks.plane.shape[1]}x{masks.plane.shape[0]} px do not lie on the pixel grid "
                         f"of {source} ({ds.Columns}x{ds.Rows} px): a DICOM SEG must")
    with warnings.catch_warnings():
        # The patient's name is the source's, copied as it is: not ours to judge.
        warnings.filterwarnings("ignore", "The string .* is unlikely to represent the intended person name")
        seg = _segmentation(ds, masks, algorithm, software_version or metadata.version("ts2d-xray"))
    _conform(seg, ds)
    with atomic_paths(path) as (temp,):
        seg.save_as(temp)
    logger.info("wrote DICOM SEG of %d structures to %s", len(masks.names), path)
    return path


def _segmentation(ds: pydicom.Dataset, masks: Masks, algorithm: str, version: str) -> highdicom.seg.Segmentation:
    """highdicom's BINARY SEG of ``masks`` on the source ``ds``: a new series of its study."""
    import highdicom as hd

    seg = hd.seg.Segmentation(
        source_images=[ds], pixel_array=np.moveaxis(masks.array, 0, -1)[None].view(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(n + 1, name, algorithm, version) for n, name in enumerate(masks.names)],
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBER_OFFSET + int(ds.get("SeriesNumber") or 0),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="ts2d-xray", manufacturer_model_name=algorithm,
        software_versions=version, device_serial_number="none", content_label="TS2D_XRAY",
        content_description=f"{algorithm} segmentation")
    seg.SeriesDescription = f"Segmentation ({algorithm})"
    return seg


def _read_source(source: Path) -> pydicom.Dataset:
    """The source's header (no pixel data): a single-frame DICOM image."""
    import pydicom

    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise InputError(source, f"not a readable DICOM file ({brief(exc)})") from exc
    if "Rows" not in ds or "Columns" not in ds or int(ds.get("NumberOfFrames") or 1) != 1:
        raise InputError(source, "a DICOM SEG of a radiograph needs a single-frame DICOM image")
    return ds


def _concept(code: Code) -> highdicom.sr.CodedConcept:
    import highdicom as hd

    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _description(number: int, name: str, algorithm: str, version: str) -> highdicom.seg.SegmentDescription:
    """Segment ``number``: label, SNOMED CT codes (type modifier, anatomic region), colour, algorithm."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    term = segment_terminology(name)
    region = None
    if term.region is not None:
        region = _concept(term.region)
        if term.region_modifier is not None:
            region.AnatomicRegionModifierSequence = [_concept(term.region_modifier)]
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=name, segmented_property_category=_concept(term.category),
        segmented_property_type=_concept(term.type), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, version=version, family=codes.cid7162.ArtificialIntelligence),
        anatomic_regions=None if region is None else [region],
        display_color=hd.color.CIELabColor.from_rgb(*display_color(name)))
    if term.type_modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _concept(term.type_modifier)]
    return description


def _conform(seg: highdicom.seg.Segmentation, ds: pydicom.Dataset) -> None:
    """Fix what highdicom copies from a radiograph but a SEG of it may not carry, in place.

    * Without a Frame of Reference (radiographs) Patient Orientation is required
      (General Image module, type 2C): the source's, or empty.  Pixel Measures are not
      (Segmentation IOD: required with a Frame of Reference) and highdicom copies the
      source's Pixel Spacing without a Slice Thickness, which its own reader then
      refuses: the SEG's geometry is its source image's, left out here.
    * A Pixel Spacing of zero (some CRs) is not a spacing: no Pixel Measures then.
    * Patient/study attributes with values invalid for their VR are emptied (type 2
      and 3 attributes may be empty).
    """
    from pydicom import config
    from pydicom.valuerep import validate_value

    placed = "FrameOfReferenceUID" in seg
    if not placed:
        seg.PatientOrientation = ds.get("PatientOrientation", "")
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures and (not placed or not all(float(v) > 0 for v in measures[0].get("PixelSpacing") or (0,))):
        del shared.PixelMeasuresSequence
    for keyword in _OPTIONAL_COPIED:
        element = seg.get(keyword) and seg[keyword]
        if not element or element.value in (None, ""):
            continue
        try:
            validate_value(element.VR, element.value, config.RAISE)
        except ValueError:
            element.value = None
