"""Export to upstream nnU-Net's region format: every structure's mask comes back exactly."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from ts2d_xray.cli import main
from ts2d_xray.dataset import load_dataset
from ts2d_xray.dataset.regions import export_regions


def test_region_codes_decode_to_the_multilabel_masks(coronal_dataset, tmp_path):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    ds = load_dataset(coronal_dataset)
    out = export_regions(ds, tmp_path / "Dataset501_Organs")
    meta = json.loads((out / "dataset.json").read_text())
    labels = meta["labels"]
    # nnU-Net reads it as a region data set with one sigmoid head per kept structure.
    manager = LabelManager(labels, meta["regions_class_order"])
    kept = [n for n in labels if n != "background"]
    assert manager.has_regions and manager.num_segmentation_heads == len(kept) >= 5
    assert set(meta["ts2d_export"]["structures_left_out_absent_everywhere"]) == set(ds.structures) - set(kept)
    overlapping = 0
    for case in ds.case_ids:
        image, masks = ds.read(case)
        label_map = np.asarray(nib.load(out / "labelsTr" / f"{case}.nii.gz").dataobj)[:, :, 0].T
        assert label_map.dtype == np.uint16 and label_map.shape == masks.array.shape[1:]
        for name in kept:
            np.testing.assert_array_equal(np.isin(label_map, labels[name]), masks.mask(name), err_msg=name)
        overlapping += int((masks.array.sum(axis=0) > 1).sum())
        for c in range(image.array.shape[0]):
            channel = np.asarray(nib.load(out / "imagesTr" / f"{case}_{c:04d}.nii.gz").dataobj)[:, :, 0].T
            np.testing.assert_array_equal(channel, image.array[c])
    assert overlapping > 0  # the data really has overlaps for the codes to carry


def test_nnunet_accepts_the_exported_data_set(coronal_dataset, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    out = export_regions(coronal_dataset, tmp_path / "Dataset503_Organs")
    verify_dataset_integrity(str(out), num_processes=1)  # raises on any inconsistency


def test_cli_export_refuses_an_existing_folder(coronal_dataset, tmp_path, capsys):
    out = tmp_path / "Dataset502_Organs"
    assert main(["export-regions", str(coronal_dataset), "-o", str(out)]) == 0
    assert (out / "dataset.json").is_file() and "codes" in capsys.readouterr().out
    assert main(["export-regions", str(coronal_dataset), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
