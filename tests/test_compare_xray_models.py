"""scripts/compare_xray_models.py: paired per-structure differences between two X-ray models on new DRRs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from compare_xray_models import main, paired_difference  # noqa: E402


def test_paired_difference_is_mean_and_standard_error_over_shared_drrs():
    old = {0: 0.5, 1: 0.6, 2: 0.7, 7: 0.1}
    new = {0: 0.4, 1: 0.6, 2: 0.9, 9: 0.9}  # DRRs 7 and 9 are scored by one model only: left out
    mean, se = paired_difference(old, new)
    d = np.array([-0.1, 0.0, 0.2])
    assert mean == pytest.approx(d.mean())
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert paired_difference({3: 0.2}, {3: 0.5}) == (pytest.approx(0.3), 0.0)


def test_a_model_against_itself_loses_nothing(data, tmp_path):
    """The bundled X-ray model against itself on one real-CT DRR per CT and preset: every difference is 0."""
    out = tmp_path / "compare.json"
    assert main(["--old", "ts2d-xray-xray", "--new", "ts2d-xray-xray", "--drrs", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["drrs"] for row in result["summary"]] == ["all", "chest-pa", "chest-ap-portable"]
    for row in result["summary"]:
        assert row["structures"] > 80 and row["worse"] == 0 and row["better"] == 0
        assert row["mean_dice_old"] == row["mean_dice_new"] > 0.3
    assert result["old_dice"] == result["new_dice"]
