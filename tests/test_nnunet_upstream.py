"""Upstream nnU-Net v2 plans and trains on what ``export-regions`` writes (nnU-Net's 2D convention).

Every 2D file the project writes in nnU-Net's formats has a singleton z axis of 999 mm,
so nnU-Net's planner keeps that axis out of the plane and plans a 2D patch over rows and
columns.  With 1 mm there (data sets written before the convention) it moved an in-plane
axis first and planned a degenerate ``[1, W]`` patch that ``nnUNetv2_train`` crashed on.

The fast test runs nnU-Net's own fingerprint and planner (``nnUNetv2_plan_and_preprocess
--no_pp``) on a tiny synthetic data set; the slow one plans, preprocesses and trains a
few iterations on CPU on the export of the real coronal data set (the shared CTs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ts2d_xray.dataset import finalize, write_case
from ts2d_xray.dataset.regions import export_regions
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io.slice3d import NNUNET_NORMAL_SPACING_MM

BIN = Path(sys.executable).parent
STRUCTURES = ("liver", "spleen")
SPACING = (1.5, 1.5)  # (row, column) mm: with a 1 mm singleton, nnU-Net moved a 1.5 mm axis first

# A trainer for a few iterations on CPU, found by nnUNetv2_train through nnUNet_extTrainer.
TINY_TRAINER = '''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_Ts2dTiny(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 1
'''


def _tiny_dataset(root: Path, n: int = 3, shape: tuple[int, int] = (72, 56)) -> Path:
    """``n`` xray cases of two overlapping discs of shifting size, in the data set format."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    plane = Plane(shape, SPACING)
    for k in range(n):
        liver = (rows - 30 - k) ** 2 + (cols - 25) ** 2 < (12 + k) ** 2
        spleen = (rows - 40) ** 2 + (cols - 30 - k) ** 2 < 9 ** 2
        masks = Masks(np.stack([liver, spleen]), STRUCTURES, plane)
        image = (0.2 + 0.5 * liver + 0.3 * spleen + 0.05 * np.random.default_rng(k).random(shape))[None]
        write_case(root, f"case_{k:03d}", Image2D(image.astype(np.float32), plane, ("xray",)), masks,
                   {"case": f"case_{k:03d}", "empty_structures": []})
    finalize(root, STRUCTURES, ("organs",), {"kind": "xray", "preset": "tiny", "seed": 0, "spacing": None,
                                             "shape": None})
    return root


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, nnUNet_raw=str(tmp / "raw"), nnUNet_preprocessed=str(tmp / "preprocessed"),
               nnUNet_results=str(tmp / "results"), nnUNet_n_proc_DA="1", nnUNet_compile="f",
               OMP_NUM_THREADS="2")
    return env


def _nnunet(command: str, *args: str, env: dict[str, str], timeout: int) -> None:
    done = subprocess.run([str(BIN / command), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _plans_2d(tmp: Path, name: str) -> dict:
    plans = json.loads((tmp / "preprocessed" / name / "nnUNetPlans.json").read_text())
    return plans


def test_data_set_files_have_nnunet_2d_spacing(tmp_path):
    root = _tiny_dataset(tmp_path / "Dataset910_Tiny", n=1)
    out = export_regions(root, tmp_path / "Dataset911_Tiny")
    for path in [*root.glob("*Tr/*.nii.gz"), *out.glob("*Tr/*.nii.gz")]:
        zooms = nib.load(path).header.get_zooms()
        assert zooms[:3] == (1.5, 1.5, NNUNET_NORMAL_SPACING_MM), path


def test_nnunet_plans_a_2d_patch_over_rows_and_columns(tmp_path):
    name = "Dataset912_Tiny"
    export_regions(_tiny_dataset(tmp_path / "source"), tmp_path / "raw" / name)
    _nnunet("nnUNetv2_plan_and_preprocess", "-d", "912", "-c", "2d", "-np", "1", "--no_pp",
            env=_env(tmp_path), timeout=300)
    plans = _plans_2d(tmp_path, name)
    assert plans["original_median_spacing_after_transp"] == [NNUNET_NORMAL_SPACING_MM, 1.5, 1.5]
    assert plans["transpose_forward"] == [0, 1, 2]
    patch = plans["configurations"]["2d"]["patch_size"]
    assert len(patch) == 2 and min(patch) > 1, patch
    assert plans["configurations"]["2d"]["spacing"] == [1.5, 1.5]


@pytest.mark.slow
def test_nnunet_trains_on_the_export_of_real_data(coronal_dataset, tmp_path):
    name = "Dataset913_Organs"
    export_regions(coronal_dataset, tmp_path / "raw" / name)
    env = _env(tmp_path)
    _nnunet("nnUNetv2_plan_and_preprocess", "-d", "913", "-c", "2d", "-np", "1", "--verify_dataset_integrity",
            env=env, timeout=600)
    plans = _plans_2d(tmp_path, name)
    patch = plans["configurations"]["2d"]["patch_size"]
    assert min(patch) > 32, patch
    trainers = tmp_path / "trainers"
    trainers.mkdir()
    (trainers / "ts2d_tiny_trainer.py").write_text(TINY_TRAINER)
    env["nnUNet_extTrainer"] = str(trainers)
    _nnunet("nnUNetv2_train", "913", "2d", "0", "-tr", "nnUNetTrainer_Ts2dTiny", "-device", "cpu",
            env=env, timeout=900)
    fold = tmp_path / "results" / name / "nnUNetTrainer_Ts2dTiny__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] >= 0.0  # validation ran over every region


def test_our_fingerprint_and_plans_use_the_2d_convention():
    from ts2d_xray.train.plans import data_fields, dataset_fingerprint

    image = np.ones((1, 40, 30), np.float32)
    mask = np.zeros((1, 40, 30), bool)
    mask[0, 10:20, 5:15] = True
    fingerprint = dataset_fingerprint([image, image], [mask, mask], [(1.5, 2.0), (1.5, 2.0)],
                                      [np.ones(1, bool)] * 2)
    assert fingerprint["spacings"] == [[NNUNET_NORMAL_SPACING_MM, 1.5, 2.0]] * 2
    fields = data_fields(fingerprint, {"channel_names": {"0": "zscore"}, "name": "X"}, (1.5, 2.0))
    assert fields["plans"]["original_median_spacing_after_transp"] == [NNUNET_NORMAL_SPACING_MM, 1.5, 2.0]


def test_bundled_plans_use_the_2d_convention():
    weights = Path(__file__).resolve().parents[1] / "ts2d_xray" / "weights"
    found = sorted(weights.glob("*/*/*/plans.json"))
    groups = [g for m in weights.glob("*/ts2d_xray_model.json") for g in json.loads(m.read_text())["groups"]]
    assert len(found) == len(groups) == 3  # coronal: all; xray: all, radiographic
    for path in found:
        spacing = json.loads(path.read_text())["original_median_spacing_after_transp"]
        assert spacing[0] == NNUNET_NORMAL_SPACING_MM and max(spacing[1:]) < 10, path


def test_data_sets_written_with_1_mm_still_read_and_export_with_999(tmp_path):
    from ts2d_xray.dataset import load_dataset

    root = _tiny_dataset(tmp_path / "Dataset914_Old", n=2)
    before = {c: load_dataset(root).read(c) for c in load_dataset(root).case_ids}
    for path in root.glob("*Tr/*.nii.gz"):  # as data sets were written before the convention
        old = nib.load(path)
        affine = old.affine.copy()
        affine[:3, 2] /= NNUNET_NORMAL_SPACING_MM
        nib.Nifti1Image(np.asarray(old.dataobj), affine).to_filename(path)
        assert nib.load(path).header.get_zooms()[2] == 1.0
    ds = load_dataset(root)
    for case, (image, masks) in before.items():
        again_image, again_masks = ds.read(case)
        np.testing.assert_array_equal(again_image.array, image.array)
        np.testing.assert_array_equal(again_masks.array, masks.array)
    out = export_regions(ds, tmp_path / "Dataset915_Old")
    for path in out.glob("*Tr/*.nii.gz"):
        assert nib.load(path).header.get_zooms()[2] == NNUNET_NORMAL_SPACING_MM, path
