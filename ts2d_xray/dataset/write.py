"""Write a data set: cases into ``.partial/`` first, moved into place file by file, the record last.

The record (``cases/<case>.json``) is the completion marker: :func:`write_case` moves
a case's files in a fixed order (images, label, then the record), so a record means
every file of the case is in place, even if the writer is killed.  :func:`finalize`
then makes ``cases.jsonl`` and ``dataset.json`` agree with the complete cases.  File
names and fields are those of :mod:`ts2d_xray.dataset.format`.  Images and labels are
NIfTI in nnU-Net's 2D convention: the singleton z axis has a spacing of
:data:`~ts2d_xray.io.slice3d.NNUNET_NORMAL_SPACING_MM` (999 mm).  A file that cannot be
written (disk full, read-only folder) raises :class:`~ts2d_xray.errors.OutputError`
naming it, and leaves no partial file behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ts2d_xray.dataset.format import (
    CASES_FILE,
    DATASET_JSON,
    IMAGES_DIR,
    LABEL_LAYOUT,
    LABELS_DIR,
    PARTIAL_DIR,
    RECORDS_DIR,
    case_files,
    case_ids_on_disk,
    dataset_json,
    image_name,
    is_complete,
    label_name,
)
from ts2d_xray.errors import OutputError
from ts2d_xray.image import Image2D, Masks
from ts2d_xray.io.files import output_error, read_json, sidecar_path, temp_sibling, write_json, write_text
from ts2d_xray.io.slice3d import NNUNET_NORMAL_SPACING_MM, write_nifti
from ts2d_xray.kinds import CHANNELS
from ts2d_xray.labels import display_color

__all__ = ["discard_partial", "finalize", "write_case"]

log = logging.getLogger(__name__)


def write_case(root: str | PathLike, case_id: str, image: Image2D, masks: Masks, record: Mapping[str, Any]) -> None:
    """Write one case into a data set: into ``.partial/`` first, then move its files into place.

    Args:
        root: The data set folder.
        case_id: The case id (file names follow :func:`case_files`).
        image: ``(C, H, W)`` float32, one file per channel, in the data set's channel order.
        masks: ``(K, H, W)`` on the image's plane, already in ``dataset.json["structures"]``
            order (absent structures as empty layers).
        record: The case's provenance (``cases/<case>.json``); numpy values are turned into
            JSON by :func:`~ts2d_xray.io.files.json_default`.

    Files move in a fixed order (images, label, then the record), so a record in
    ``cases/`` means every file of the case is in place, even if the writer is killed.
    Nothing of the case is left in ``.partial/``, whether it succeeds or fails.
    """
    if masks.plane.shape != image.plane.shape:
        raise ValueError(f"masks of shape (H, W) = {masks.plane.shape} for an image of {image.plane.shape}")
    root = Path(root)
    temp = temp_sibling(root / PARTIAL_DIR / case_id)
    try:
        files = []  # in the order they move into place
        for c, name in enumerate(image.channels):
            written = _write_channel(image, c, temp / IMAGES_DIR / image_name(case_id, c))
            files += [written, sidecar_path(written)]
        label = _write_label(masks, temp / LABELS_DIR / label_name(case_id))
        files += [sidecar_path(label), label]
        files.append(write_json(temp / RECORDS_DIR / f"{case_id}.json", record))
        _move_into_place(files, temp, root)
    except OutputError as err:  # name the file where it was going, not its temporary place
        raise output_error(err, root, temp) from err
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _write_channel(image: Image2D, c: int, path: Path) -> Path:
    """Channel ``c`` of ``image`` as float32 NIfTI ``(x = W, y = H, z = 1, t = 1)``, with its sidecar."""
    data = image.array[c : c + 1].astype(np.float32).transpose(2, 1, 0)[:, :, None, :]
    write_nifti(data, image.plane, path, {"layout": "x = columns, y = rows, z = 1 (plane normal), t = channel",
                                          "channels": [image.channels[c]]}, normal_mm=NNUNET_NORMAL_SPACING_MM)
    return path


def _write_label(masks: Masks, path: Path) -> Path:
    """``masks`` as uint8 NIfTI ``(x = W, y = H, z = 1, t = K)``, 1 = inside, with its sidecar."""
    structures = [{"index": k, "name": name, "color": display_color(name)} for k, name in enumerate(masks.names)]
    data = masks.array.transpose(2, 1, 0)[:, :, None, :].astype(np.uint8)
    write_nifti(data, masks.plane, path, {"layout": LABEL_LAYOUT, "structures": structures},
                normal_mm=NNUNET_NORMAL_SPACING_MM)
    return path


def _move_into_place(files: Sequence[Path], temp: Path, root: Path) -> None:
    """Move ``files`` from the case's temporary folder ``temp`` to the same places in ``root``, in order."""
    for path in files:
        dest = root / path.relative_to(temp)
        try:
            dest.parent.mkdir(exist_ok=True)
            os.replace(path, dest)
        except OSError as err:
            raise output_error(err, dest) from err


def discard_partial(root: str | PathLike) -> None:
    """Remove what unfinished cases left in ``.partial/`` (call it when no writer is running)."""
    shutil.rmtree(Path(root) / PARTIAL_DIR, ignore_errors=True)


def finalize(root: str | PathLike, structures: Sequence[str], groups: Sequence[str],
             settings: Mapping[str, Any], name: str | None = None) -> int:
    """Make a data set's files agree with its complete cases; return how many there are.

    Removes ``.partial/`` and the files of incomplete cases (left by a killed writer),
    then rewrites ``cases.jsonl`` and ``dataset.json`` (see :func:`dataset_json` for the
    arguments; ``name`` defaults to the folder's name, give it when the data set is
    written in a temporary folder) from the case records.  Only one writer may use a
    data set at a time.
    """
    root = Path(root)
    discard_partial(root)
    n_channels = len(CHANNELS[settings["kind"]])
    complete = []
    for case_id in sorted(case_ids_on_disk(root)):
        if is_complete(root, case_id, n_channels):
            complete.append(case_id)
        else:
            log.info("%s: removing the files of incomplete case %s", root, case_id)
            for p in case_files(root, case_id, n_channels):
                try:
                    p.unlink(missing_ok=True)
                except OSError as err:
                    raise output_error(err, p) from err
    records = [read_json(root / RECORDS_DIR / f"{c}.json", what="case record") for c in complete]
    write_text(root / CASES_FILE, "".join(json.dumps(r) + "\n" for r in records))
    write_json(root / DATASET_JSON, dataset_json(name or root.name, structures, groups, settings, records))
    return len(records)
