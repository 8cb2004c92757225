"""Training pieces on small synthetic data sets: planning, loss, sampling, splits, bad input, CLI.

Fast (no real CTs).  Real-data training is in test_train.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ts2d_xray.cli import main
from ts2d_xray.dataset import finalize, load_dataset, write_case
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io import write_masks
from ts2d_xray.train import (CONFIGS, NnUNetAugmentation, TrainConfig, Trainer, TrainOptions, get_config,
                             load_trained_network, trainer_folder)
from ts2d_xray.train.loss import MultiLabelDiceBCELoss, build_loss, deep_supervision_weights
from ts2d_xray.train.plans import plan
from ts2d_xray.train.splits import make_splits

STRUCTURES = ("liver", "spleen", "stomach")
SHAPE = (96, 80)  # (H, W) at 1.5 mm: 24 x 20 px at the tiny config's 6 mm


def _case(seed: int, shape=SHAPE, kind: str = "coronal") -> tuple[Image2D, Masks]:
    """A body (ellipse) with three overlapping organs at random places; HU-like channels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    h, w = shape
    body = ((rows - h / 2) / (0.45 * h)) ** 2 + ((cols - w / 2) / (0.45 * w)) ** 2 < 1
    masks = []
    for k in range(len(STRUCTURES)):
        r, c = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        masks.append((((rows - r) / (0.12 * h)) ** 2 + ((cols - c) / (0.15 * w)) ** 2 < 1) & body)
    masks = np.stack(masks)
    mean = np.where(body, -100.0, -900.0) + 60 * masks.sum(0) + rng.normal(0, 10, shape)
    plane = Plane(shape, (1.5, 1.5))
    if kind == "xray":
        array = ((mean + 1000) / 1200)[None].astype(np.float32)
        return Image2D(array, plane, ("xray",)), Masks(masks, STRUCTURES, plane)
    array = np.stack([mean, mean + 300 * masks[0]]).astype(np.float32)
    return Image2D(array, plane, ("mean", "max")), Masks(masks, STRUCTURES, plane)


def synthetic_dataset(root: Path, n_cases: int = 6, kind: str = "coronal") -> Path:
    for i in range(n_cases):
        image, masks = _case(i, kind=kind)
        record = {"case": f"s{i}_000", "empty_structures": [], "unlabelled_structures": []}
        write_case(root, f"s{i}_000", image, masks, record)
    settings = {"kind": kind, "preset": None if kind == "coronal" else "chest-pa", "seed": 0,
                "spacing": 1.5 if kind == "coronal" else None, "shape": None}
    finalize(root, STRUCTURES, ("organs",), settings)
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return synthetic_dataset(tmp_path / "Dataset900_Synthetic")


def _tiny(epochs: int = 1, iterations: int = 2) -> TrainConfig:
    return replace(get_config("tiny"), epochs=epochs, iterations_per_epoch=iterations)


# --- configs and planning ------------------------------------------------------------
def test_presets():
    assert set(CONFIGS) == {"tiny", "default"}
    tiny, default = get_config("tiny"), get_config("default")
    assert (tiny.spacing_mm, tiny.max_patch_size, tiny.base_features, tiny.max_features, tiny.batch_size) == (
        6.0, (64, 64), 8, 64, 8)
    assert (default.spacing_mm, default.base_features, default.max_features, default.batch_size) == (
        None, 32, 512, None)
    assert (default.initial_lr, default.momentum, default.weight_decay, default.grad_clip) == (1e-2, 0.99, 3e-5, 12)
    assert (default.epochs, default.iterations_per_epoch, default.oversample_foreground) == (1000, 250, 0.33)
    assert tiny.plans_name == "ts2dPlansTiny" and default.plans_name == "ts2dPlans"


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="unknown training config 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="spacing_mm must be > 0 mm or None, got -1"):
        TrainConfig(name="x", spacing_mm=-1)
    with pytest.raises(ValueError, match="rotation_deg must be in"):
        TrainConfig(name="x", rotation_deg=400)


def _fingerprint(n: int, shape, spacing, channels=1) -> dict:
    return {"spacings": [[1.0, *spacing]] * n, "shapes_after_crop": [[1, *shape]] * n,
            "foreground_intensity_properties_per_channel": {str(c): {} for c in range(channels)}}


def test_default_plan_reproduces_nnunet_2d_plan_of_512_images():
    meta = {"channel_names": {"0": "CT"}, "structures": list(STRUCTURES), "name": "Dataset900_X"}
    plans = plan(_fingerprint(1000, (512, 512), (0.7, 0.7)), meta, get_config("default"))
    conf = plans["configurations"]["2d"]
    # nnU-Net v2's ExperimentPlanner gives 512 x 512 patches, 8 stages, batch 12 (8 GB target).
    assert conf["patch_size"] == [512, 512] and conf["batch_size"] == 12
    arch = conf["architecture"]["arch_kwargs"]
    assert arch["n_stages"] == 8 and arch["features_per_stage"] == [32, 64, 128, 256, 512, 512, 512, 512]
    assert arch["strides"] == [[1, 1]] + [[2, 2]] * 7 and arch["kernel_sizes"] == [[3, 3]] * 8
    assert conf["spacing"] == [0.7, 0.7] and plans["transpose_forward"] == [0, 1, 2]
    # Few images: at most 5% of the data set's pixels per batch, but at least 2.
    few = plan(_fingerprint(8, (512, 512), (0.7, 0.7)), meta, get_config("default"))
    assert few["configurations"]["2d"]["batch_size"] == 2


def test_tiny_plan_of_coronal_projections():
    meta = {"channel_names": {"0": "CT", "1": "CT"}, "structures": list(STRUCTURES), "name": "x"}
    conf = plan(_fingerprint(5, (224, 244), (1.5, 1.5), 2), meta, get_config("tiny"))["configurations"]["2d"]
    assert conf["spacing"] == [6.0, 6.0]
    assert conf["patch_size"] == [56, 64]  # the median shape at 6 mm (56 x 61), padded to a multiple of 8
    assert conf["batch_size"] == 8 and conf["normalization_schemes"] == ["CTNormalization"] * 2
    assert conf["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64]


# --- loss ----------------------------------------------------------------------------
def test_loss_is_nnunets_dice_bce_and_ignores_unlabelled_structures():
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 16, 16, generator=gen)
    target = (torch.rand(4, 3, 16, 16, generator=gen) > 0.6).to(torch.uint8)
    nnunet = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False},
                             dice_class=MemoryEfficientSoftDiceLoss)
    ours = MultiLabelDiceBCELoss(batch_dice=True)
    assert float(ours(logits, target)) == pytest.approx(float(nnunet(logits, target)), abs=1e-6)
    assert float(ours(logits, target, torch.ones(4, 3, 1, 1))) == pytest.approx(float(nnunet(logits, target)),
                                                                              abs=1e-6)
    # Structure 1 unlabelled in every case: the loss of the other two alone.
    valid = torch.ones(4, 3, 1, 1)
    valid[:, 1] = 0
    keep = [0, 2]
    assert float(ours(logits, target, valid)) == pytest.approx(float(nnunet(logits[:, keep], target[:, keep])),
                                                               abs=1e-6)
    # Unlabelled in one case only: what that case predicts for it does not matter.
    valid = torch.ones(4, 3, 1, 1)
    valid[2, 1] = 0
    changed = logits.clone()
    changed[2, 1] = 50
    assert float(ours(logits, target, valid)) == pytest.approx(float(ours(changed, target, valid)), abs=1e-6)


def test_deep_supervision_weights_are_nnunets():
    assert deep_supervision_weights(4) == pytest.approx(np.array([1, 0.5, 0.25, 0]) / 1.75)
    loss = build_loss(3)
    assert loss.weight_factors == pytest.approx((1 / 1.5, 0.5 / 1.5, 0.0))


# --- batches and augmentation ------------------------------------------------------
def test_batches_are_deterministic_and_leave_global_generators_alone(dataset, tmp_path):
    trainer = Trainer(tmp_path / "m", load_dataset(dataset), _tiny(), TrainOptions(device="cpu", fold="all"))
    trainer.prepare()
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a, b, c = trainer.sampler(5), trainer.sampler(5), trainer.sampler(6)
    assert torch.equal(a["data"], b["data"]) and not torch.equal(a["data"], c["data"])
    assert all(torch.equal(x, y) for x, y in zip(a["target"], b["target"]))
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.get_rng_state(), torch_state)
    patch = tuple(trainer.plans["configurations"]["2d"]["patch_size"])
    assert a["data"].shape == (8, 2, *patch) and a["target"][0].shape == (8, 3, *patch)
    assert [t.shape[2:] for t in a["target"]] == [patch, tuple(p // 2 for p in patch)][: len(a["target"])]
    assert a["valid"] is None  # every structure labelled: nnU-Net's loss as it is
    # nnU-Net's oversampling: the last round(8 * 0.33) = 3 patches hold foreground.
    for batch in range(10):
        target = trainer.sampler(batch)["target"][0]
        assert all(target[j].any() for j in range(5, 8))


def test_cases_are_drawn_in_proportion_to_their_sampling_weight(dataset, tmp_path):
    def drawn(name: str, batches: int = 150) -> list[str]:
        trainer = Trainer(tmp_path / name, load_dataset(dataset), _tiny(), TrainOptions(device="cpu", fold="all"))
        trainer.prepare()
        return [key for i in range(batches) for key in trainer.sampler(i)["keys"]]

    uniform = drawn("uniform")
    _set_weights(dataset, {f"s{i}_000": 3.0 for i in range(6)})
    assert drawn("equal") == uniform  # equal weights, whatever their value, leave the draws as they were
    _set_weights(dataset, {"s0_000": 10.0})  # 10 / (10 + 5 * 3) = 0.4 of the patches
    weighted = drawn("weighted")
    assert abs(weighted.count("s0_000") / len(weighted) - 0.4) < 0.05
    assert abs(uniform.count("s0_000") / len(uniform) - 1 / 6) < 0.05
    assert set(weighted) == set(uniform)  # the others are still drawn


def test_augmentation_moves_masks_with_the_image_and_never_mirrors():
    aug = NnUNetAugmentation((32, 32), rotation_deg=10)
    assert aug.input_size[0] > 32  # grown for the rotations
    h, w = aug.input_size
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, h // 3: 2 * h // 3, 2: w // 3] = 1  # far left
    masks[1, 5: h // 2, w // 2: w - 5] = 1
    image = torch.stack([masks[0] * 100.0, masks[1] * 100.0])
    torch.manual_seed(0)
    np.random.seed(0)
    for _ in range(40):
        out_image, out_masks = aug(image.clone(), masks.clone())
        assert out_image.shape == (2, 32, 32) and out_masks.shape == (2, 32, 32)
        assert set(out_masks.unique().tolist()) <= {0, 1}
        for k in range(2):
            if out_masks[k].sum() > 20:
                corr = np.corrcoef(out_image[k].flatten(), out_masks[k].flatten().float())[0, 1]
                assert corr > 0.7
        left = out_masks[0].nonzero()
        if len(left):
            assert left[:, 1].float().mean() < 16  # a left structure stays left: no mirroring


# --- splits ------------------------------------------------------------------------
def test_splits_are_nnunets_default():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = [f"c{i}" for i in range(7)]
    assert make_splits(ids[::-1], 5) == [{"train": list(s["train"]), "val": list(s["val"])}
                                         for s in generate_crossval_split(ids, seed=12345, n_splits=5)]


def test_split_is_written_once_and_shared_by_folds(dataset, tmp_path):
    result = Trainer(tmp_path / "m", load_dataset(dataset), _tiny(), TrainOptions(device="cpu", fold=1)).fit()
    splits = json.loads((result.trainer_dir / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(sum((s["val"] for s in splits), [])) == sorted(load_dataset(dataset).case_ids)
    assert result.fold_dir.name == "fold_1"


# --- reuse: radiographs, initial weights, another augmentation -------------------------
def test_one_channel_data_set_with_initial_weights_and_custom_augmentation(dataset, tmp_path):
    coronal = Trainer(tmp_path / "coronal", load_dataset(dataset), _tiny(), TrainOptions(device="cpu", fold="all"))
    weights = torch.load(coronal.fit().final_checkpoint, map_location="cpu", weights_only=True)

    xray = load_dataset(synthetic_dataset(tmp_path / "Dataset901_Xray", kind="xray"))
    calls = []

    class CentreCrop:
        input_size = (24, 24)

        def __call__(self, image, masks):
            calls.append(image.shape)
            return image[:, 2:22, 2:22], masks[:, 2:22, 2:22]

    config = replace(_tiny(), max_patch_size=(20, 20))
    trainer = Trainer(tmp_path / "xray", xray, config, TrainOptions(device="cpu", fold="all"),
                      initial_weights=weights, in_channels=2, augmentation=CentreCrop())
    result = trainer.fit()
    assert calls and all(tuple(s) == (2, 24, 24) for s in calls)  # the x-ray channel feeds both inputs
    assert trainer.plans["ts2d"]["channel_source"] == [0, 0] and trainer.plans["ts2d"]["in_channels"] == 2
    assert result.skipped_weights == ()  # same architecture: every tensor came from the coronal model
    network, plans, dataset_json = load_trained_network(result.trainer_dir, "all")
    assert dataset_json["kind"] == "xray" and plans["configurations"]["2d"]["normalization_schemes"] == [
        "ZScoreNormalization"]
    with pytest.raises(InputError, match="only a 1-channel data set can be repeated"):
        Trainer(tmp_path / "x", load_dataset(dataset), _tiny(), TrainOptions(device="cpu"), in_channels=3).prepare()
    with pytest.raises(ValueError, match="no tensor matches"):
        Trainer(tmp_path / "y", xray, _tiny(), TrainOptions(device="cpu", fold="all"),
                initial_weights={"foo": torch.zeros(3)}).prepare()


# --- bad input -----------------------------------------------------------------------
def _label(root: Path, case: str) -> Path:
    return root / "labelsTr" / f"{case}.nii.gz"


def _break_missing_label(root: Path) -> str:
    _label(root, "s3_000").unlink()
    return r"1 incomplete case\(s\): case s3_000: missing labelsTr/s3_000.nii.gz"


def _break_shape(root: Path) -> str:
    _, masks = _case(0, shape=(90, 80))
    write_masks(masks, _label(root, "s3_000"))  # a label (and sidecar) of another shape than the images
    return r"s3_000.nii.gz: label shape \(x = W, y = H\) = \(80, 90\) does not match the image"


def _break_values(root: Path) -> str:
    path = _label(root, "s3_000")
    label = nib.load(path)
    data = np.asarray(label.dataobj).copy()
    data[10, 10, 0, 1] = 2
    nib.save(nib.Nifti1Image(data, label.affine, label.header), path)
    return r"labels must be binary \(0 = outside, 1 = inside\), found values \[2\] in the layers of \['spleen'\]"


def _too_few_cases(root: Path) -> str:
    for i in (3, 4, 5):
        for path in root.rglob(f"s{i}_000*"):
            path.unlink()
    finalize(root, STRUCTURES, ("organs",), {"kind": "coronal", "preset": None, "seed": 0, "spacing": 1.5,
                                             "shape": None})
    return r"3 case\(s\) for 5 folds: a 5-fold split needs at least 5 cases"


def _set_weights(root: Path, weights: dict[str, object]) -> None:
    """Give cases of a synthetic data set a ``sampling_weight`` in their records."""
    for case, weight in weights.items():
        path = root / "cases" / f"{case}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "sampling_weight": weight}))
    meta = json.loads((root / "dataset.json").read_text())
    finalize(root, meta["structures"], meta["groups"], {k: meta[k] for k in ("kind", "preset", "seed", "spacing",
                                                                             "shape")})


def _break_weight(root: Path) -> str:
    _set_weights(root, {"s2_000": 0})
    return r"cases.jsonl: case s2_000: sampling_weight 0 is not a positive number"


BROKEN = {"missing label file": _break_missing_label, "label of another shape": _break_shape,
          "non-binary label": _break_values, "fewer cases than folds": _too_few_cases,
          "zero sampling weight": _break_weight}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_bad_data_set_is_refused_before_training(problem, dataset, tmp_path, capsys):
    message = BROKEN[problem](dataset)
    model = tmp_path / "model"
    with pytest.raises(InputError, match=message):
        Trainer(model, load_dataset(dataset), _tiny(), TrainOptions(device="cpu")).prepare()
    assert not model.exists()  # nothing written
    capsys.readouterr()
    code = main(["train", str(dataset), "-o", str(model), "--config", "tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ts2d-xray train: error: ") and err.count("\n") == 1
    assert not model.exists()


def test_other_bad_arguments_exit_2(dataset, tmp_path, capsys):
    args = ["train", str(dataset), "-o", str(tmp_path / "m"), "--config", "tiny", "--device", "cpu"]
    assert main(args + ["--fold", "7"]) == 2
    assert "fold must be in 0-4 for 5 folds, got 7" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m")]) == 2
    assert "no such data set folder" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(args[:-1] + ["cuda"]) == 2
        assert "sees no CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--epochs", "0"])  # argparse: usage error


# --- the command line ------------------------------------------------------------------
def test_cli_trains_and_resumes(dataset, tmp_path, capsys):
    model = tmp_path / "model"
    args = ["train", str(dataset), "-o", str(model), "--config", "tiny", "--epochs", "1",
            "--iterations-per-epoch", "2", "--device", "cpu", "--seed", "1"]
    assert main(args) == 0
    out = capsys.readouterr()
    folder = trainer_folder(model, get_config("tiny"))
    final = folder / "fold_0" / "checkpoint_final.pth"
    assert final.is_file() and str(final) in out.out and "epoch 1/1" in out.err  # the progress bar
    assert "loss" in out.err and "Dice" in out.err
    assert main(args) == 2  # the fold is trained: refused without --resume
    assert "already holds checkpoints" in capsys.readouterr().err
    longer = [a if a != "1" or i != 7 else "2" for i, a in enumerate(args)]  # --epochs 2
    assert main(longer + ["--resume"]) == 0
    assert torch.load(final, map_location="cpu", weights_only=True)["current_epoch"] == 2
    lines = (folder / "fold_0" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
