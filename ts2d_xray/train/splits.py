"""Cross-validation splits in nnU-Net's ``splits_final.json`` format.

``[{"train": [case ids], "val": [case ids]}, ...]``, one entry per fold.  As nnU-Net:
a ``splits_final.json`` beside the data set's ``dataset.json`` wins (a split you chose);
otherwise the trainer folder's, written by the first fold trained there; otherwise a
new 5-fold split of the sorted case ids (scikit-learn ``KFold``, shuffled, seed
12345: ``nnunetv2.utilities.crossval_split.generate_crossval_split``).  Fold ``"all"``
trains and validates on every case.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ts2d_xray.errors import InputError
from ts2d_xray.io.files import read_json, write_json

__all__ = ["SPLITS_FILE", "SPLIT_SEED", "fold_cases", "make_splits", "write_splits"]

log = logging.getLogger(__name__)

SPLITS_FILE = "splits_final.json"
#: nnU-Net's seed for its default split.
SPLIT_SEED = 12345


def make_splits(case_ids: Sequence[str], num_folds: int = 5) -> list[dict[str, list[str]]]:
    """nnU-Net's default k-fold split of the sorted case ids."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = generate_crossval_split(sorted(case_ids), seed=SPLIT_SEED, n_splits=num_folds)
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]} for s in splits]


def fold_cases(case_ids: Sequence[str], fold: int | str, num_folds: int, dataset_root: Path,
               trainer_dir: Path) -> tuple[list[str], list[str], Path | None]:
    """``(train ids, val ids, split file to write or None)`` of one fold.

    Raises:
        InputError: Fewer cases than folds (fewer than 2 for any fold), or a split file
            that lists cases the data set does not have.
        ValueError: A fold that is not ``"all"`` or ``0 .. num_folds - 1``.
    """
    case_ids = sorted(case_ids)
    if fold == "all":
        if not case_ids:
            raise InputError(dataset_root, "the data set has no cases")
        return list(case_ids), list(case_ids), None
    if not isinstance(fold, int) or isinstance(fold, bool) or fold < 0:
        raise ValueError(f"fold must be an integer >= 0 or 'all', got {fold!r}")
    for path in (dataset_root / SPLITS_FILE, trainer_dir / SPLITS_FILE):
        if path.is_file():
            splits = _read_splits(path, case_ids)
            if fold >= len(splits):
                raise ValueError(f"fold {fold} does not exist: {path} holds {len(splits)} folds (0-{len(splits) - 1})")
            log.info("using the split of %s", path)
            return list(splits[fold]["train"]), list(splits[fold]["val"]), None
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2 (or train fold 'all'), got {num_folds}")
    if len(case_ids) < num_folds:
        raise InputError(dataset_root, f"{len(case_ids)} case(s) for {num_folds} folds: a {num_folds}-fold split "
                                       f"needs at least {num_folds} cases (build more, use fewer folds, or train "
                                       "fold 'all')")
    if fold >= num_folds:
        raise ValueError(f"fold must be in 0-{num_folds - 1} for {num_folds} folds, got {fold}")
    splits = make_splits(case_ids, num_folds)
    return splits[fold]["train"], splits[fold]["val"], trainer_dir / SPLITS_FILE


def write_splits(path: Path, case_ids: Sequence[str], num_folds: int) -> None:
    """Write the default split (see :func:`make_splits`), atomically."""
    write_json(path, make_splits(case_ids, num_folds))


def _read_splits(path: Path, case_ids: Sequence[str]) -> list[dict]:
    splits = read_json(path, expect=list)
    if not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise InputError(path, "expected a list of {'train': [...], 'val': [...]} folds (nnU-Net's splits_final.json)")
    known = set(case_ids)
    for i, s in enumerate(splits):
        unknown = sorted(set(s["train"]) - known | set(s["val"]) - known)
        if unknown:
            raise InputError(path, f"fold {i} lists cases the data set does not have: {unknown[:5]}; "
                                   "remove the file or use another model folder")
        if not s["train"] or not s["val"]:
            raise InputError(path, f"fold {i} has no training or no validation cases")
    return splits
