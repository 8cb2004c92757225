"""Export a multi-label data set to upstream nnU-Net v2's region format (for ``nnUNetv2_train``).

Upstream nnU-Net reads one integer label map per case, so overlapping structures are
written with its *region* trick: every pixel gets the code of its combination of
structures (0: none), and ``dataset.json`` lists for each structure every code whose
combination holds it.  nnU-Net then trains one sigmoid output per structure (a region)
in ``regions_class_order`` order, which is the same model as :mod:`ts2d_xray.train`'s.

Codes are numbered 1, 2, ... in order of first appearance over the cases in case-id
order (deterministic for a data set); they must fit in uint16.  Images and label maps are
written as nnU-Net's 2D NIfTI (``x = W, y = H, z = 1``) on the case's plane, the singleton
z axis with nnU-Net's 2D spacing of 999 mm
(:data:`~ts2d_xray.io.slice3d.NNUNET_NORMAL_SPACING_MM`), whatever the source data set
used (data sets written before this convention have 1 mm there): nnU-Net's planner then
plans a 2D patch over rows and columns.

What does not carry over: a structure a case's source did not label
(``unlabelled_structures`` in its record) becomes "absent" for nnU-Net, which has no way
to say "unknown"; structures absent from every case are left out (nnU-Net refuses an
empty region).  Both are counted in ``dataset.json["ts2d_export"]``.

Example:
    >>> export_regions("Dataset501_Coronal/organs", "nnUNet_raw/Dataset501_Organs")  # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ts2d_xray.dataset.format import FILE_ENDING, IMAGES_DIR, LABELS_DIR, image_name, label_name
from ts2d_xray.dataset.read import Dataset, iter_cases, load_dataset
from ts2d_xray.errors import InputError
from ts2d_xray.image import Masks, Plane
from ts2d_xray.io.files import new_folder, write_json
from ts2d_xray.io.slice3d import NNUNET_NORMAL_SPACING_MM, nifti_image

__all__ = ["MAX_CODES", "export_regions"]

#: Combinations of structures that fit in a uint16 label map (0 is background).
MAX_CODES = 2**16 - 1


def export_regions(dataset: str | PathLike | Dataset, out: str | PathLike) -> Path:
    """Write ``dataset`` as an upstream nnU-Net v2 raw data set with region labels.

    Args:
        dataset: A data set of :mod:`ts2d_xray.dataset` (folder or opened).
        out: The new folder (``nnUNet_raw/DatasetXXX_Name``); refused if it exists.

    Returns:
        ``out``, written completely or not at all.
    """
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    out = Path(out)
    if out.exists():
        raise InputError(out, "exists; choose a new folder for the nnU-Net data set")
    codes: dict[bytes, int] = {}  # combination of structures (packed bits) -> code, numbered in order
    holds = np.zeros(len(ds.structures), bool)
    with new_folder(out, prefix=".exporting") as staging:
        for sub in (IMAGES_DIR, LABELS_DIR):
            (staging / sub).mkdir()
        unlabelled = sum(bool(r.get("unlabelled_structures")) for r in iter_cases(ds))
        for case in ds.case_ids:
            image, masks = ds.read(case)
            label_map = _code_map(masks, codes, ds.root)
            holds |= masks.array.any(axis=(1, 2))
            _save(label_map, masks.plane, staging / LABELS_DIR / label_name(case))
            for c in range(image.array.shape[0]):
                _save(image.array[c].astype(np.float32), image.plane, staging / IMAGES_DIR / image_name(case, c))
        write_json(staging / "dataset.json", _region_dataset_json(ds, out.name, codes, holds, unlabelled))
    return out


def _save(array: np.ndarray, plane: Plane, path: Path) -> None:
    """An ``(H, W)`` array as nnU-Net's 2D NIfTI ``(x = W, y = H, z = 1)``, singleton spacing 999 mm."""
    nifti_image(array.T[:, :, None], plane, NNUNET_NORMAL_SPACING_MM).to_filename(path)


def _code_map(masks: Masks, codes: dict[bytes, int], source: Path) -> np.ndarray:
    """``(H, W)`` uint16: the code of each pixel's combination of structures (0: none).

    Combinations not yet in ``codes`` get the next code (added to ``codes``).
    """
    k, h, w = masks.array.shape
    packed = np.packbits(masks.array.reshape(k, -1), axis=0).T  # (pixels, ceil(K / 8)) bytes
    combos, inverse = np.unique(packed, axis=0, return_inverse=True)
    lookup = np.zeros(len(combos), np.uint16)
    for i, combo in enumerate(combos):
        if not combo.any():
            continue
        key = combo.tobytes()
        if key not in codes:
            if len(codes) == MAX_CODES:
                raise InputError(source, f"more than {MAX_CODES} combinations of structures: they do "
                                         "not fit nnU-Net's uint16 label maps")
            codes[key] = len(codes) + 1
        lookup[i] = codes[key]
    return lookup[inverse.reshape(-1)].reshape(h, w)


def _region_dataset_json(ds: Dataset, name: str, codes: dict[bytes, int], holds: np.ndarray,
                         unlabelled: int) -> dict[str, Any]:
    """nnU-Net's ``dataset.json`` with one region per structure that some case holds: the codes holding it."""
    # Row c - 1: which structures code c holds (codes were numbered in insertion order).
    width = (len(ds.structures) + 7) // 8
    members = np.unpackbits(np.frombuffer(b"".join(codes), np.uint8).reshape(-1, width), axis=1,
                            count=len(ds.structures)).astype(bool)
    kept = [s for s, present in zip(ds.structures, holds) if present]
    labels: dict[str, Any] = {"background": 0}
    for j, structure in enumerate(ds.structures):
        if holds[j]:
            labels[structure] = [int(c) for c in np.flatnonzero(members[:, j]) + 1]
    return {
        "name": name, "channel_names": dict(ds.meta["channel_names"]), "labels": labels,
        "regions_class_order": list(range(1, len(kept) + 1)), "numTraining": len(ds.case_ids),
        "file_ending": FILE_ENDING,
        "ts2d_export": {"source": str(ds.root), "codes": len(codes),
                        "cases_with_unlabelled_structures_exported_as_absent": unlabelled,
                        "structures_left_out_absent_everywhere": [s for s, p in zip(ds.structures, holds) if not p]},
    }
