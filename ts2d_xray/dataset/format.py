"""The on-disk data set format: nnU-Net v2 raw data sets of 2D images with multi-label masks.

``ts2d-xray synth build`` writes these data sets (:mod:`ts2d_xray.dataset.write`) and
the training code reads them (:mod:`ts2d_xray.dataset.read`); this module names their
files and fields (``format_version`` 1, described in full in ``docs/dataset_format.md``)::

    ROOT/
      dataset.json                  nnU-Net fields + ours ("multilabel", "structures", ...)
      imagesTr/<case>_0000.nii.gz   channel 0: float32 (x = W, y = H, z = 1, t = 1); z spacing 999 mm
      imagesTr/<case>_0001.nii.gz   channel 1 (coronal only)
      imagesTr/<case>_000C.json     sidecar: channel name and geometry
      labelsTr/<case>.nii.gz        uint8 (x = W, y = H, z = 1, t = K): volume t = k is the
                                    binary mask (1 = inside) of dataset.json["structures"][k]
      labelsTr/<case>.json          sidecar: structure order, colours and geometry
      cases/<case>.json             provenance of one case; moved in last: the case is complete
      cases.jsonl                   every complete case's record, one per line, in case-id order
      .partial/                     only while a build runs: cases being written

Conventions:

* Images and masks follow the radiograph display convention (head up, the patient's
  right on the image left; see :mod:`ts2d_xray.image`); geometry is LPS, in mm, in the
  NIfTI affine and in each sidecar (``shape_hw``, ``spacing_mm`` as (row, column), ...).
  The singleton z axis has nnU-Net's 2D spacing of 999 mm
  (:data:`~ts2d_xray.io.slice3d.NNUNET_NORMAL_SPACING_MM`); data sets written before
  that convention have 1 mm, and read the same (the geometry comes from the sidecars).
* In memory an image is ``(C, H, W)`` float32 (coronal: mean and max projection in HU;
  xray: [0, 1], 1 = white) and masks are ``(K, H, W)`` bool; the files hold the
  transpose ``(x = W, y = H, z = 1, t)``.
* Masks may overlap.  A structure a case lacks is an all-zero layer; the case record
  lists ``unlabelled_structures`` (not covered by the source labels), which training
  should ignore rather than treat as background.
* A case record may carry ``sampling_weight`` (> 0, default 1): training draws the case
  in proportion to it (e.g. rare real films more often than common ones).
* A case is complete when every file of :func:`case_files` exists.  :func:`write_case`
  moves the files in with ``os.replace``, images, label, then the record, so the record
  marks a complete case even if the writer is killed.

Reading is :mod:`ts2d_xray.dataset.read` (with an example), writing
:mod:`ts2d_xray.dataset.write`.
"""

from __future__ import annotations

import math
import re
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

from ts2d_xray.io.files import sidecar_path  # the JSON that write_nifti puts beside a file
from ts2d_xray.kinds import CHANNELS, KINDS, NNUNET_CHANNEL_NAMES

__all__ = [
    "CASES_FILE",
    "DATASET_JSON",
    "DISPLAY",
    "FILE_ENDING",
    "FORMAT_VERSION",
    "IMAGES_DIR",
    "LABELS_DIR",
    "LABEL_LAYOUT",
    "PARTIAL_DIR",
    "RECORDS_DIR",
    "REQUIRED_FIELDS",
    "case_files",
    "case_ids_on_disk",
    "dataset_json",
    "image_name",
    "is_complete",
    "label_name",
    "sampling_weight_problem",
]

#: Version of the on-disk format (``dataset.json["format_version"]``).
FORMAT_VERSION = 1
#: Display convention of every image and mask (patient's right on the image left).
DISPLAY = "radiograph"
FILE_ENDING = ".nii.gz"
LABEL_LAYOUT = "uint8 NIfTI (x = columns W, y = rows H, z = 1, t = structure index K); 1 = inside"
DATASET_JSON = "dataset.json"
CASES_FILE = "cases.jsonl"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
RECORDS_DIR = "cases"  # per-case records: the completion markers
PARTIAL_DIR = ".partial"  # cases being written
#: dataset.json fields that load_dataset needs.
REQUIRED_FIELDS = ("format_version", "kind", "channels", "structures", "file_ending", "numTraining")


# --- file names -------------------------------------------------------------------
def image_name(case_id: str, channel: int) -> str:
    """``<case>_<CCCC>.nii.gz``: the file of one channel in ``imagesTr/``."""
    return f"{case_id}_{channel:04d}{FILE_ENDING}"


def label_name(case_id: str) -> str:
    """``<case>.nii.gz``: the label file in ``labelsTr/``."""
    return f"{case_id}{FILE_ENDING}"


def case_files(root: str | PathLike, case_id: str, n_channels: int) -> list[Path]:
    """Every file of a complete case: images, their sidecars, label, its sidecar, record (last)."""
    root = Path(root)
    images = [root / IMAGES_DIR / image_name(case_id, c) for c in range(n_channels)]
    label = root / LABELS_DIR / label_name(case_id)
    return images + [*map(sidecar_path, images), label, sidecar_path(label), root / RECORDS_DIR / f"{case_id}.json"]


def is_complete(root: str | PathLike, case_id: str, n_channels: int) -> bool:
    """Whether every file of a case exists (see :func:`case_files`)."""
    return all(p.is_file() for p in case_files(root, case_id, n_channels))


def case_ids_on_disk(root: Path) -> set[str]:
    """Case ids of every case file in a data set, complete or not."""
    ids = set()
    for folder, pattern in ((IMAGES_DIR, r"(.+)_\d{4}\.(nii\.gz|json)"), (LABELS_DIR, r"(.+)\.(nii\.gz|json)"),
                            (RECORDS_DIR, r"(.+)\.json")):
        if (root / folder).is_dir():
            for p in (root / folder).iterdir():
                if m := re.fullmatch(pattern, p.name):
                    ids.add(m.group(1))
    return ids


# --- case records -----------------------------------------------------------------
def sampling_weight_problem(weight: Any) -> str | None:
    """Why ``weight`` cannot be a case's ``sampling_weight`` (a positive finite number), or None if it can."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        return f"sampling_weight {weight!r} is not a positive number"
    return None


# --- dataset.json -----------------------------------------------------------------
def dataset_json(name: str, structures: Sequence[str], groups: Sequence[str], settings: Mapping[str, Any],
                 records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The contents of ``dataset.json``: nnU-Net's fields, then ours.

    Args:
        name: The data set's name (its folder name).
        structures: The K label layers, in file order; structure ``k`` gets nnU-Net
            label value ``k + 1``.
        groups: The TS2D groups whose structures the data set holds.
        settings: The build settings stored as they are: ``kind`` (``"coronal"`` or
            ``"xray"``), ``preset``, ``seed``, ``spacing`` and ``shape``.
        records: The case records of the complete cases (each with ``empty_structures``).
    """
    kind = settings["kind"]
    if kind not in KINDS:
        raise ValueError(f"settings['kind'] must be one of {list(KINDS)}, got {kind!r}")
    empty = [n for n in structures if records and all(n in r["empty_structures"] for r in records)]
    return {
        "channel_names": {str(c): n for c, n in enumerate(NNUNET_CHANNEL_NAMES[kind])},
        "labels": {"background": 0, **{n: k + 1 for k, n in enumerate(structures)}},
        "numTraining": len(records),
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"ts2d-xray synth build: {kind} images with multi-label masks "
                       "(see docs/dataset_format.md)",
        "multilabel": True,
        "structures": list(structures),
        "format_version": FORMAT_VERSION,
        "label_layout": LABEL_LAYOUT,
        "channels": list(CHANNELS[kind]),
        "display": DISPLAY,
        "groups": list(groups),
        **settings,
        "cases_file": CASES_FILE,
        "empty_structures": empty,
    }
