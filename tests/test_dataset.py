"""ts2d_xray.dataset: the data set format, written and read back on tiny synthetic cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ts2d_xray.dataset import (
    case_files,
    finalize,
    is_complete,
    iter_cases,
    load_dataset,
    read_case,
    validate_case,
    write_case,
)
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io import write_masks

STRUCTURES = ("liver", "spleen", "heart")
SHAPE = (5, 4)  # (H, W)
SETTINGS = {"kind": "xray", "preset": "tiny", "seed": 3, "spacing": None, "shape": None}
CASES = ("s_000", "s_001")


def _masks(shape=SHAPE, names=STRUCTURES, seed=0) -> Masks:
    array = np.random.default_rng(seed).random((len(names), *shape)) > 0.5
    array[-1] = False  # "heart": empty in every case
    return Masks(array, tuple(names), Plane(shape, (2.0, 1.5)))


def _write(root: Path, case_id: str, kind: str = "xray", seed: int = 0) -> tuple[Image2D, Masks]:
    masks = _masks(seed=seed)
    channels = ("xray",) if kind == "xray" else ("mean", "max")
    array = np.random.default_rng(seed).random((len(channels), *SHAPE), dtype=np.float32)
    image = Image2D(array, masks.plane, channels)
    empty = [n for n, layer in zip(masks.names, masks.array) if not layer.any()]
    record = {"case": case_id, "params": {"gain": np.float32(1.5), "angles": np.arange(2)}, "empty_structures": empty}
    write_case(root, case_id, image, masks, record)
    return image, masks


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "Dataset900_Tiny"
    for k, case_id in enumerate(CASES):
        _write(root, case_id, seed=k)
    assert finalize(root, STRUCTURES, ("organs",), SETTINGS) == 2
    return root


def _label(root: Path, case_id: str) -> Path:
    return root / "labelsTr" / f"{case_id}.nii.gz"


# --- writing and reading back -----------------------------------------------------
def test_written_dataset_loads_and_reads_back(dataset):
    ds = load_dataset(dataset, validate_all=True)
    assert ds.root == dataset and ds.case_ids == CASES and ds.kind == "xray"
    assert ds.structures == STRUCTURES and ds.channels == ("xray",)
    assert ds.meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "heart": 3}
    assert ds.meta["numTraining"] == 2 and ds.meta["channel_names"] == {"0": "zscore"}
    assert ds.meta["empty_structures"] == ["heart"] and ds.meta["seed"] == 3
    assert not (dataset / ".partial").exists()
    with pytest.raises(TypeError):
        ds.meta["kind"] = "coronal"  # read-only

    image, masks = ds.read("s_001")
    expected = _masks(seed=1)
    assert image.array.shape == (1, *SHAPE) and image.array.dtype == np.float32
    assert masks.names == STRUCTURES and np.array_equal(masks.array, expected.array)
    assert masks.plane.shape == SHAPE and masks.plane.spacing == (2.0, 1.5)
    assert np.array_equal(read_case(dataset, "s_001")[1].array, masks.array)
    records = list(iter_cases(ds))
    assert [r["case"] for r in records] == list(CASES)
    assert records[0]["params"] == {"gain": 1.5, "angles": [0, 1]}  # numpy values as JSON


def test_coronal_case_has_two_channels(tmp_path):
    settings = {**SETTINGS, "kind": "coronal", "preset": None, "spacing": 1.5}
    written, _ = _write(tmp_path, "c_000", kind="coronal")
    finalize(tmp_path, STRUCTURES, ("organs",), settings)
    ds = load_dataset(tmp_path)
    assert ds.channels == ("mean", "max") and ds.meta["channel_names"] == {"0": "CT", "1": "CT"}
    image, _ = ds.read("c_000")
    assert image.channels == ("mean", "max") and np.array_equal(image.array, written.array)
    assert len(case_files(tmp_path, "c_000", 2)) == 7 and is_complete(tmp_path, "c_000", 2)


def test_write_case_refuses_masks_of_another_shape(tmp_path):
    image = Image2D(np.zeros((1, *SHAPE), np.float32), Plane(SHAPE, (1.0, 1.0)), ("xray",))
    with pytest.raises(ValueError, match=r"masks of shape \(H, W\) = \(6, 4\) for an image of \(5, 4\)"):
        write_case(tmp_path, "x_000", image, _masks(shape=(6, 4)), {})
    assert not any(tmp_path.rglob("*.nii.gz"))


def test_finalize_removes_incomplete_cases(dataset):
    (dataset / "cases" / "s_001.json").unlink()  # as if killed before the record moved in
    assert finalize(dataset, STRUCTURES, ("organs",), SETTINGS) == 1
    assert not any("s_001" in p.name for p in dataset.rglob("*"))
    assert load_dataset(dataset).case_ids == ("s_000",)


def test_the_reader_does_not_import_synth():
    code = "import ts2d_xray.dataset, sys; assert 'synth' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors -----------------------------------------------------------------------
def test_missing_folder_or_dataset_json(dataset, tmp_path):
    with pytest.raises(InputError, match="nowhere: no such data set folder"):
        load_dataset(tmp_path / "nowhere")
    (dataset / "dataset.json").unlink()
    with pytest.raises(InputError, match="Dataset900_Tiny: no dataset.json: not a data set"):
        load_dataset(dataset)


def test_other_format_version_is_refused(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    (dataset / "dataset.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(InputError, match="format_version must be 1, got 2"):
        load_dataset(dataset)


def test_missing_label_file(dataset):
    _label(dataset, "s_001").unlink()
    with pytest.raises(InputError, match=r"1 incomplete case\(s\): case s_001: missing labelsTr/s_001.nii.gz"):
        load_dataset(dataset)


def test_label_of_another_shape_than_its_image(dataset):
    write_masks(_masks(shape=(6, 4)), _label(dataset, "s_000"))
    with pytest.raises(InputError, match=r"label shape \(x = W, y = H\) = \(4, 6\) does not match the image "
                                         r"s_000_0000.nii.gz of shape \(4, 5, 1, 1\)"):
        load_dataset(dataset)


def test_label_with_another_number_of_layers(dataset):
    write_masks(_masks(names=STRUCTURES[:2]), _label(dataset, "s_000"))
    with pytest.raises(InputError, match="2 label layers, expected 3: one per structure of dataset.json"):
        load_dataset(dataset)


def _make_non_binary(label: Path, layer: int) -> None:
    old = nib.load(label)
    data = np.asarray(old.dataobj).copy()
    data[0, 0, 0, layer] = 2
    nib.save(nib.Nifti1Image(data, old.affine, old.header), label)


def test_non_binary_labels(dataset):
    _make_non_binary(_label(dataset, "s_000"), STRUCTURES.index("spleen"))
    with pytest.raises(InputError, match=r"labels must be binary \(0 = outside, 1 = inside\), "
                                         r"found values \[2\] in the layers of \['spleen'\]"):
        load_dataset(dataset)


def test_only_the_first_case_is_read_unless_asked(dataset):
    _make_non_binary(_label(dataset, "s_001"), 0)
    ds = load_dataset(dataset)  # checks the files of every case, reads the first one
    assert ds.case_ids == CASES
    validate_case(ds, "s_000")
    with pytest.raises(InputError, match=r"s_001.nii.gz: labels must be binary.*\['liver'\]"):
        validate_case(ds, "s_001")
    with pytest.raises(InputError, match="s_001.nii.gz: labels must be binary"):
        load_dataset(dataset, validate_all=True)


def test_case_list_and_dataset_json_disagree(dataset):
    lines = (dataset / "cases.jsonl").read_text().splitlines()
    (dataset / "cases.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(InputError, match="numTraining=2 but cases.jsonl lists 1 cases"):
        load_dataset(dataset)
