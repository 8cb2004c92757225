"""The result of segmenting one image: masks on the input's grid, a report, and its files.

:meth:`Result.save` writes, into one folder (each format optional):

==============  ======================  ==================================================
format          file                    contents
==============  ======================  ==================================================
``seg.nrrd``    ``masks.seg.nrrd``      3D Slicer segmentation, one segment per structure
                                        with its SNOMED CT terminology and colour
``dicom-seg``   ``masks.dcm``           DICOM SEG of a DICOM radiograph: one segment per
                                        structure, SNOMED CT codes, referencing the image
``nifti``       ``segmentations/``      one uint8 NIfTI per structure (``<name>.nii.gz``,
                                        TotalSegmentator's layout) + ``structures.json``
``png``         ``masks/``              one 0/255 PNG per structure + ``structures.json``
``overlay``     ``overlay.png``         the image with the present structures and a legend,
                                        the CTR's two lines, or a red note when flagged
``json``        ``report.json``         :meth:`Result.report`
==============  ======================  ==================================================

By default (:attr:`Result.default_formats`) ``seg.nrrd``, ``overlay`` and ``json``, plus
``dicom-seg`` for a DICOM radiograph.  The mask files are on the input's own grid and
orientation (the PNGs match the input's pixel array row for row), with the geometry that
overlays the input in 3D Slicer and ITK: for a 2D input file the one ITK gives that file
(:attr:`Result.file_grid`; the anatomical plane, mm at the patient, is the report's),
for a CT its projection in the CT's space; the DICOM SEG references the radiograph.
Every structure has the same colour in every file and the overlay.  Only the overlay is flipped into the radiograph display
convention (patient's right on the image left), for reading.  Files appear all at once:
they are written into a hidden folder first and moved into place when all are complete.

A result the rules of :mod:`ts2d_xray.segment.trust` flag (:attr:`Result.trust`) keeps
its masks, but its report gives the reasons and no CTR, and its overlay says why in red.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, Image2D, Masks
from ts2d_xray.io.dicom_seg import write_dicom_seg
from ts2d_xray.io.files import staged_folder, write_json
from ts2d_xray.io.masks import write_mask_folder, write_masks
from ts2d_xray.io.preview import write_preview
from ts2d_xray.labels import is_known, preview_subset
from ts2d_xray.measure import body_regions, cardiothoracic_ratio, structure_stats
from ts2d_xray.orientation import Orientation
from ts2d_xray.segment.trust import Trust, assess

__all__ = ["DEFAULT_FORMATS", "FORMATS", "REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "Result", "tool_version"]

#: Version of ``report.json``'s layout (:data:`REPORT_SCHEMA`): major changes break readers.
REPORT_SCHEMA_VERSION = "1.1"
#: The JSON Schema of ``report.json``, shipped in the package (``ts2d_xray/configs``).
REPORT_SCHEMA = "report.schema.json"

#: Every output format :meth:`Result.save` knows, and the file or folder it writes.
FORMATS: Mapping[str, str] = {"seg.nrrd": "masks.seg.nrrd", "dicom-seg": "masks.dcm", "nifti": "segmentations",
                              "png": "masks", "overlay": "overlay.png", "json": "report.json"}
#: Formats written when none are chosen; DICOM radiographs also get ``dicom-seg``.
DEFAULT_FORMATS: tuple[str, ...] = ("seg.nrrd", "overlay", "json")


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The formats, validated (ValueError naming the unknown one and the known ones)."""
    formats = tuple(dict.fromkeys(formats))
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"unknown output format {f!r}; choose from {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"no output format given; choose from {', '.join(FORMATS)}")
    return formats


@dataclass(frozen=True, eq=False)
class Result:
    """Segmentation of one image.

    Attributes:
        masks: ``(K, H, W)`` bool on the input's 2D grid and orientation (for a CT: its
            projection at the model's pixel size, radiograph display), one layer per
            structure of the model's selected groups.
        image: The 2D image that was segmented, on the same plane as ``masks``.
        input_kind: ``"ct"``, ``"projection"`` or ``"radiograph"``.
        model: Model name.
        source: Input path, or None for an array.
        scores: Per structure ``{"confidence": mean probability inside the mask,
            "max_probability": ...}``, at the model's pixel size (confidence is None
            for an empty mask).
        timings: Seconds spent per step (``read``, ``predict``, ``total``).
        file_grid: For a 2D input file, the grid ITK and 3D Slicer give that file
            (:func:`ts2d_xray.io.itk.file_grid`): the NRRD and NIfTI mask files take it,
            so that they overlay the file; None (CTs, arrays): the masks' plane.
        model_checksum: SHA-256 of the model's weights
            (:func:`ts2d_xray.segment.segmenter.model_checksum`), where known.
    """

    masks: Masks
    image: Image2D
    input_kind: str
    model: str
    source: str | None = None
    scores: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    file_grid: Grid | None = None
    model_checksum: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Structure names, one per mask layer."""
        return self.masks.names

    def mask(self, name: str) -> np.ndarray:
        """``(H, W)`` bool mask of a structure; derived names (``lungs``, ``ribs``) are unions."""
        return self.masks.mask(name)

    @property
    def present(self) -> tuple[str, ...]:
        """Structures whose mask covers at least :data:`~ts2d_xray.measure.MIN_PRESENT_AREA_MM2`."""
        return tuple(n for n, s in self._stats.items() if s["present"])

    # A Result's masks are not replaced, so what is measured on them is measured once
    # (save's overlay and report, and the CLI's line, all ask).
    @cached_property
    def _stats(self) -> dict[str, dict[str, Any]]:
        """:func:`~ts2d_xray.measure.structure_stats` with the scores, once."""
        return structure_stats(self.masks, self.scores)

    @cached_property
    def trust(self) -> Trust:
        """Whether to trust this result and what it assumed (:mod:`ts2d_xray.segment.trust`)."""
        return assess(self.masks, self.image.meta, self.input_kind, self.scores)

    def report(self) -> dict[str, Any]:
        """A JSON-ready summary: image geometry, trust, per-structure measurements, body regions, CTR.

        It follows the JSON Schema ``ts2d_xray/configs/report.schema.json``
        (:data:`REPORT_SCHEMA`), version ``schema_version``; ``tool_version`` is
        ts2d-xray's, ``model_sha256`` the model's weights' (:attr:`model_checksum`).

        ``image`` holds the anatomical plane (``shape_hw``, ``spacing_mm`` at the patient,
        ``orientation``) on which every mm figure rests, and ``file_grid``: the geometry
        of the mask files (ITK's size, spacing, origin, direction of the input file;
        None: the plane's own layout).  It also says where its spacing and orientation
        come from (``spacing_source``, ``spacing_assumed``: when true every mm figure of
        the report rests on a guessed spacing) and the DICOM header's examination facts
        (``header``); ``trust`` is :meth:`Trust.as_dict` (``flagged`` with its
        ``reasons``, and the ``assumptions``);
        ``structures`` holds every structure (see :func:`ts2d_xray.measure.structure_stats`,
        plus ``confidence`` and ``max_probability``); ``present`` lists those present;
        ``body_regions`` maps each covered region (head, neck, thorax, abdomen, pelvis,
        legs) to the structures that show it; ``cardiothoracic_ratio``
        (:func:`ts2d_xray.measure.cardiothoracic_ratio`, plus ``mm_assumed``) is given for
        radiographs with the heart and both lung fields that are not flagged, else None.
        """
        trust = self.trust
        stats = copy.deepcopy(self._stats)  # the report is the caller's to change
        present = list(self.present)
        ctr = None
        if self.input_kind == "radiograph" and not trust.flagged:
            ctr = cardiothoracic_ratio(self.masks)
            if ctr is not None:
                ctr["mm_assumed"] = trust.spacing_assumed
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "tool_version": tool_version(),
            "source": self.source,
            "model": self.model,
            "model_sha256": self.model_checksum,
            "input_kind": self.input_kind,
            "image": self._image_report(trust),
            "trust": trust.as_dict(),
            "present": present,
            "body_regions": body_regions(self.masks, present),
            "cardiothoracic_ratio": ctr,
            "structures": stats,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def _image_report(self, trust: Trust) -> dict[str, Any]:
        """The report's ``image``: geometry, where spacing and orientation come from, the header's facts."""
        plane = self.masks.plane
        return {"shape_hw": list(plane.shape), "spacing_mm": [round(s, 6) for s in plane.spacing],
                "spacing_order": "(row, column)", "spacing_source": self.image.meta.get("spacing_source"),
                "spacing_assumed": trust.spacing_assumed, "orientation": list(plane.orientation),
                "orientation_source": self.image.meta.get("orientation_source"), "display": plane.display,
                "origin_lps_mm": None if plane.origin is None else list(plane.origin),
                "channels": list(self.image.channels), "header": dict(trust.header),
                "file_grid": None if self.file_grid is None else {
                    "size": list(self.file_grid.shape[::-1]), "spacing": list(self.file_grid.spacing),
                    "origin": list(self.file_grid.origin), "direction": list(self.file_grid.direction)}}

    def _marks(self, shown: Masks) -> dict[str, Any]:
        """The overlay's marks on the masks as shown: the CTR's lines, or why not to trust the masks."""
        trust = self.trust
        if trust.flagged:
            return {"lines": (), "note": "NOT TRUSTED: " + "; ".join(trust.reasons)}
        ctr = cardiothoracic_ratio(shown) if self.input_kind == "radiograph" else None
        return {"lines": tuple(ctr["lines"].values()) if ctr else (), "note": None}

    @property
    def is_dicom_radiograph(self) -> bool:
        """True when the input was a DICOM radiograph file, whose DICOM SEG ``save`` can write."""
        return self.input_kind == "radiograph" and self.source is not None and self.image.meta.get("format") == "dicom"

    @property
    def default_formats(self) -> tuple[str, ...]:
        """:data:`DEFAULT_FORMATS`, plus ``dicom-seg`` for a DICOM radiograph."""
        return DEFAULT_FORMATS + (("dicom-seg",) if self.is_dicom_radiograph else ())

    def save(self, out_dir: str | PathLike, formats: Sequence[str] | None = None) -> list[Path]:
        """Write the chosen formats into ``out_dir`` (see the module docstring); returns the paths.

        ``formats`` None: :attr:`default_formats`.  Existing outputs of the same names
        are replaced; a failure leaves ``out_dir`` as it was (a new ``out_dir`` does not
        appear at all).  The formats are written side by side in threads (their
        compression releases the GIL), after the masks are measured once for them all.

        Raises:
            InputError: ``dicom-seg`` for an input that is no DICOM radiograph file.
            OutputError: A file cannot be written (disk full, read-only folder), naming it.
        """
        formats = check_formats(self.default_formats if formats is None else formats)
        if "dicom-seg" in formats and not self.is_dicom_radiograph:
            others = ", ".join(f for f in FORMATS if f != "dicom-seg")
            raise InputError(self.source, f"a DICOM SEG is written for DICOM radiographs only, not for this "
                                          f"{self.input_kind}; choose among {others}")
        out = Path(out_dir)
        if {"overlay", "json"} & set(formats):
            self._stats, self.trust  # noqa: B018 - measured here, not by two writer threads at once
        workers = min(len(formats), os.cpu_count() or 1)
        with staged_folder(out) as staging, ThreadPoolExecutor(workers, thread_name_prefix="save") as pool:
            for job in [pool.submit(self._write, f, staging / FORMATS[f]) for f in formats]:
                job.result()  # the first failure is raised once every writer has stopped
        return [out / FORMATS[f] for f in formats]

    def _write(self, fmt: str, target: Path) -> None:
        """Write one format to ``target``."""
        if fmt == "seg.nrrd":
            write_masks(self.masks, target, grid=self.file_grid)
        elif fmt == "dicom-seg":
            write_dicom_seg(self.masks, self.source, target, algorithm=self.model)
        elif fmt in ("nifti", "png"):
            write_mask_folder(self.masks, target, ".nii.gz" if fmt == "nifti" else ".png", grid=self.file_grid)
        elif fmt == "overlay":
            image, masks = _for_reading(self.image, self.masks)
            write_preview(image, target, masks.select(_shown(masks, self.present)), **self._marks(masks))
        else:
            write_json(target, self.report())


def _shown(masks: Masks, present: Sequence[str]) -> tuple[str, ...]:
    """Structures drawn on the overlay: the coarse preview set when the catalog knows them, else all present."""
    known = [n for n in present if is_known(n)]
    coarse = preview_subset(known) if known else ()
    return coarse + tuple(n for n in present if not is_known(n)) if coarse else tuple(present)


def _for_reading(image: Image2D, masks: Masks) -> tuple[Image2D, Masks]:
    """Image and masks in the radiograph display when the view is coronal, else as stored."""
    try:
        orient = Orientation.for_display(image.plane, "radiograph")
    except ValueError:
        return image, masks
    return orient.apply(image), orient.apply(masks)


def tool_version() -> str:
    """The installed ts2d-xray's version (the package metadata's)."""
    from importlib.metadata import version

    return version("ts2d-xray")
