"""The Wingspan split (configs/wingspan_split.json), the CTR against the authors' values, the scoring script."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate_wingspan import authors_ctr, read_truth, score_film, summary  # noqa: E402
from make_wingspan_split import SEED, make_split, split_document, vendor_prefix, wingspan_names  # noqa: E402

from ts2d_xray.measure import cardiothoracic_ratio  # noqa: E402


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads((ROOT / "configs" / "wingspan_split.json").read_text())


def test_split_is_deterministic_disjoint_and_complete(data, stored):
    names = wingspan_names(data)
    assert len(names) == 220
    assert split_document(names) == stored  # the stored split is what the script makes
    assert make_split(list(reversed(names))) == make_split(names)  # the listing order does not matter
    assert make_split(names, seed=SEED + 1)["validation"] != stored["validation"]  # the seed does
    train, validation = set(stored["train"]), set(stored["validation"])
    assert not train & validation and train | validation == set(names)
    assert len(validation) == 44


def test_split_is_stratified_by_vendor_group(data, stored):
    total = Counter(vendor_prefix(n) for n in wingspan_names(data))
    validation = Counter(vendor_prefix(n) for n in stored["validation"])
    for group, n in total.items():
        assert validation[group] == round(0.2 * n), group
        assert stored["groups"][group] == {"train": n - validation[group], "validation": validation[group]}
    assert vendor_prefix("1.2.840.113619.2.356.4.1.png") == "1.2.840.113619"


def test_ctr_of_the_manual_masks_matches_the_authors(data):
    """The measurement (issue 12, item 3) on the manual masks reproduces the authors' CTR of all 185 films."""
    from ts2d_xray.io import read_radiograph

    wingspan = data / "xray" / "wingspan"
    errors = []
    with pytest.warns(UserWarning):  # PNGs: assumed spacing and orientation
        plane = read_radiograph(wingspan / "png" / next(iter(authors_ctr(wingspan))), display=None).plane
    for name, reference in authors_ctr(wingspan).items():
        ctr = cardiothoracic_ratio(read_truth(wingspan, name, plane))
        errors.append(abs(ctr["ctr"] - reference))
    assert len(errors) == 185
    assert np.mean(errors) < 0.002 and np.max(errors) < 0.01


def test_scoring_two_validation_films(data, stored):
    """scripts/evaluate_wingspan.py's scores for two films: Dice in [0, 1], CTR errors, counts."""
    from ts2d_xray import Segmenter, read_radiograph

    wingspan = data / "xray" / "wingspan"
    reference = authors_ctr(wingspan)
    names = [n for n in stored["validation"] if n in reference][:2]
    rows = []
    with Segmenter("ts2d-xray-xray", device="cpu") as seg, pytest.warns(UserWarning):
        for name in names:
            image = read_radiograph(wingspan / "png" / name, display=None)
            rows.append(score_film(seg(image), read_truth(wingspan, name, image.plane), reference[name]))
    for row in rows:
        assert row["fields_from"] == "lung_field_right/lung_field_left"  # the model's own lung fields
        assert all(0.0 <= row[k] <= 1.0 for k in ("lung_field_right", "lung_field_left", "heart"))
        assert abs(row["ctr_manual"] - row["ctr_authors"]) < 0.01
    s = summary(rows)
    assert s["films"] == 2 and s["ctr_films"] == 2
    assert s["heart_dice"] == pytest.approx(np.mean([r["heart"] for r in rows]))
    assert s["heart_dice_se"] == pytest.approx(np.std([r["heart"] for r in rows], ddof=1) / np.sqrt(2))
    assert summary(rows[:1])["heart_dice_se"] is None  # no spread from one film
