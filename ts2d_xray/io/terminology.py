"""The coded terminology a segmentation file gives each structure (Slicer's seg.nrrd, DICOM SEG).

Catalog structures carry TotalSegmentator's SNOMED CT codes
(:func:`ts2d_xray.labels.terminology`); any other name (a user's own structure) gets
:data:`GENERIC`, the ``Tissue`` / ``Tissue`` codes that 3D Slicer gives a new segment, so
that every segment of a file has the category and type DICOM SEG requires.
:func:`slicer_terminology` writes them as slicerio's dict for Slicer's ``TerminologyEntry``
tag; the DICOM SEG writer (:mod:`ts2d_xray.io.dicom_seg`) takes the same
:class:`~ts2d_xray.labels.Terminology`.
"""

from __future__ import annotations

from typing import Any

from ts2d_xray import labels
from ts2d_xray.labels import Code, Terminology

__all__ = ["ANATOMIC_CONTEXT", "CATEGORY_TYPE_CONTEXT", "GENERIC", "segment_terminology", "slicer_terminology"]

_TISSUE = Code("SCT", "85756007", "Tissue")
#: Codes of a structure the catalog does not know (Slicer's default for a new segment).
GENERIC = Terminology(category=_TISSUE, type=_TISSUE, type_modifier=None, region=None, region_modifier=None,
                      source="generic (structure not in the catalog)")
#: Slicer's terminology context of DICOM's category/type codes, and of its anatomic region codes.
CATEGORY_TYPE_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def segment_terminology(name: str) -> Terminology:
    """The codes of a structure: the catalog's (SNOMED CT, TotalSegmentator's table), else :data:`GENERIC`."""
    return labels.terminology(name) if labels.is_known(name) else GENERIC


def _triple(code: Code | None) -> list[str]:
    return ["", "", ""] if code is None else [code.scheme, code.value, code.meaning]


def slicer_terminology(name: str) -> dict[str, Any]:
    """slicerio's terminology dict of a structure, written as Slicer's ``TerminologyEntry`` tag.

    Example: ``kidney_left`` -> ``Segmentation category and type - DICOM master list
    ~SCT^123037004^Anatomical Structure~SCT^64033007^Kidney~SCT^7771000^Left
    ~Anatomic codes - DICOM master list~^^~^^``.
    """
    term = segment_terminology(name)
    entry: dict[str, Any] = {"contextName": CATEGORY_TYPE_CONTEXT, "category": _triple(term.category),
                             "type": _triple(term.type), "typeModifier": _triple(term.type_modifier),
                             "anatomicContextName": ANATOMIC_CONTEXT, "anatomicRegion": _triple(term.region),
                             "anatomicRegionModifier": _triple(term.region_modifier)}
    return entry
