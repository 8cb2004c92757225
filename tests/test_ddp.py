"""Distributed training: two gloo processes under torchrun train on the 1-process run's batches.

The distributed runs are real: ``torchrun --nproc_per_node 2 -m ts2d_xray.cli train``
(two CPU processes, gloo), as subprocesses, on a small synthetic data set with the tiny
configuration.  Checked: the loss curve of 20 iterations (one per epoch, so every
iteration is logged) matches a 1-process run of the same seed to 1 % (in practice to
float rounding); the 2-process checkpoint resumes in 1 process to the weights a
1-process resume gives; and the pieces (shards, the environment, refusals) without
subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from test_train_units import synthetic_dataset
from ts2d_xray.dataset import load_dataset
from ts2d_xray.nnunet.layout import CONFIGURATION
from ts2d_xray.train import Trainer, TrainOptions, get_config
from ts2d_xray.train.checkpoint import load_checkpoint
from ts2d_xray.train.distributed import Distributed
from ts2d_xray.train.training_log import LOG_FILE

#: The comparison: 20 epochs of one iteration each (the loss of every iteration is logged).
EPOCHS, ITERATIONS, RESUMED_EPOCHS = 20, 1, 22


def _torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m ts2d_xray.cli ARGS`` (one thread per process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ts2d_xray.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _train_args(dataset: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", str(dataset), "-o", str(out), "--config", "tiny", "--epochs", str(epochs),
            "--iterations-per-epoch", str(ITERATIONS), "--device", "cpu", "--seed", "0", *extra]


def _one_process(dataset: Path, out: Path, epochs: int, resume: bool = False) -> Trainer:
    config = replace(get_config("tiny"), epochs=epochs, iterations_per_epoch=ITERATIONS)
    trainer = Trainer(out, load_dataset(dataset), config, TrainOptions(device="cpu", seed=0, resume=resume))
    trainer.fit()
    return trainer


def _losses(fold_dir: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (fold_dir / LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The same training in one process (in this one) and in two (torchrun), 20 iterations each."""
    root = tmp_path_factory.mktemp("ddp")
    dataset = synthetic_dataset(root / "Dataset900_Synthetic")
    one = _one_process(dataset, root / "one", EPOCHS)
    done = _torchrun(*_train_args(dataset, root / "two", EPOCHS))
    assert done.returncode == 0, done.stderr[-3000:]
    fold = one.fold_dir.relative_to(root / "one")  # <trainer>__<plans>__2d/fold_0
    return {"root": root, "dataset": dataset, "fold": fold, "one": root / "one" / fold, "two": root / "two" / fold,
            "stdout": done.stdout}


def _copy(runs: dict, name: str, to: Path) -> Path:
    """A copy of a run's model folder (to resume it without changing it)."""
    shutil.copytree(runs["root"] / name, to)
    return to


@pytest.fixture(scope="module")
def one_resumed(runs) -> dict[str, torch.Tensor]:
    """The 1-process run, resumed in 1 process to RESUMED_EPOCHS: its weights."""
    out = _copy(runs, "one", runs["root"] / "one_resumed")
    return _one_process(runs["dataset"], out, RESUMED_EPOCHS, resume=True).network.state_dict()


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``|a - b| / |b|`` over all float weights (2-norms).

    Per tensor it means little: the convolution biases before an instance norm get
    gradients of float noise only (the norm removes them), so they drift apart by 100 %
    of their ~0 value while the network's function does not change.
    """
    assert a.keys() == b.keys()
    keys = [k for k in b if b[k].is_floating_point()]
    diff = torch.cat([(a[k].double() - b[k].double()).flatten() for k in keys])
    return float(diff.norm() / torch.cat([b[k].double().flatten() for k in keys]).norm())


def test_two_processes_reproduce_the_one_process_loss_curve(runs):
    one, two = _losses(runs["one"]), _losses(runs["two"])
    assert len(one) == len(two) == EPOCHS
    # 1 %, or 0.001 where the curve crosses 0 (Dice + BCE is negative once the Dice wins);
    # measured: 1.4e-3 relative at most, the differences of float sums in another order.
    np.testing.assert_allclose(two, one, rtol=0.01, atol=1e-3)
    assert one[-1] < one[0]  # it trains: a curve worth comparing
    assert runs["stdout"].count("checkpoint_final.pth") == 1  # process 0 alone printed the result


def test_two_process_checkpoint_holds_plain_weights_and_the_world_size(runs):
    two = load_checkpoint(runs["two"] / "checkpoint_final.pth")
    one = load_checkpoint(runs["one"] / "checkpoint_final.pth")
    assert not any(k.startswith("module.") for k in two["network_weights"])
    assert (two["options"]["world_size"], one["options"]["world_size"]) == (2, 1)
    assert two["current_epoch"] == one["current_epoch"] == EPOCHS
    assert _relative_difference(two["network_weights"], one["network_weights"]) < 1e-3  # measured 2.5e-4


def test_two_process_checkpoint_resumes_in_one_process(runs, one_resumed, tmp_path):
    out = _copy(runs, "two", tmp_path / "two")
    from_two = _one_process(runs["dataset"], out, RESUMED_EPOCHS, resume=True)
    assert from_two.current_epoch == RESUMED_EPOCHS and len(_losses(from_two.fold_dir)) == RESUMED_EPOCHS
    assert _relative_difference(from_two.network.state_dict(), one_resumed) < 1e-3


@pytest.mark.slow
def test_one_process_checkpoint_resumes_in_two_processes(runs, one_resumed, tmp_path):
    """The other way round: a 1-process checkpoint continued by two processes (another torchrun)."""
    out = _copy(runs, "one", tmp_path / "one")
    done = _torchrun(*_train_args(runs["dataset"], out, RESUMED_EPOCHS, "--resume"))
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_checkpoint(out / runs["fold"] / "checkpoint_final.pth")
    assert resumed["current_epoch"] == RESUMED_EPOCHS and resumed["options"]["world_size"] == 2
    assert _relative_difference(resumed["network_weights"], one_resumed) < 1e-3


def test_more_processes_than_patches_are_refused_before_anything_is_written(tmp_path):
    dataset = synthetic_dataset(tmp_path / "Dataset900_Synthetic")
    config = replace(get_config("tiny"), batch_size=1)
    trainer = Trainer(tmp_path / "model", load_dataset(dataset), config, TrainOptions(device="cpu"))
    trainer.dist = Distributed(rank=0, world_size=2, local_rank=0, local_world_size=2)  # process 0 writes
    with pytest.raises(ValueError, match="2 processes share a batch of 1 patches .* --nproc_per_node <= 1"):
        trainer._prepare_folder()  # the checks and writes of prepare(), before any collective
    assert not (tmp_path / "model").exists()


# --- the pieces --------------------------------------------------------------------
def test_environment_without_torchrun_is_one_process():
    assert not Distributed.from_environment({}).active
    assert not Distributed.from_environment({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}).active
    d = Distributed.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size, d.active, d.is_main) == (3, 4, 1, 2, True, False)
    with pytest.raises(ValueError, match="only RANK set"):
        Distributed.from_environment({"RANK": "0"})
    with pytest.raises(ValueError, match="must be integers"):
        Distributed.from_environment({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="not a valid place"):
        Distributed.from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


@pytest.mark.parametrize("batch,world", [(8, 2), (12, 8), (5, 3), (3, 3)])
def test_shards_cover_the_global_batch_once(batch, world):
    shards = [Distributed(r, world, r, world).shard(batch) for r in range(world)]
    assert shards[0][0] == 0 and shards[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    sizes = [stop - start for start, stop in shards]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    weights = [Distributed(r, world, r, world).loss_weight(batch) for r in range(world)]
    assert sum(weights) == pytest.approx(world)  # mean over processes of weighted means: the global mean
    with pytest.raises(ValueError, match=f"{batch + 1} processes share a batch of {batch} patches"):
        Distributed(0, batch + 1, 0, batch + 1).shard(batch)


def test_shards_of_a_batch_are_its_patches(tmp_path):
    """Each process's share is exactly its slice of the 1-process batch (augmentation included)."""
    config = replace(get_config("tiny"), epochs=1, iterations_per_epoch=1)
    trainer = Trainer(tmp_path / "m", load_dataset(synthetic_dataset(tmp_path / "Dataset900_Synthetic")), config,
                      TrainOptions(device="cpu", seed=5))
    trainer.prepare()
    whole = trainer.sampler(7)
    batch = trainer.plans["configurations"][CONFIGURATION]["batch_size"]
    for world in (2, 3):
        parts = []
        for rank in range(world):
            sampler = replace_shard(trainer.sampler, Distributed(rank, world, rank, world).shard(batch))
            parts.append(sampler(7))
        assert torch.equal(torch.cat([p["data"] for p in parts]), whole["data"])
        for scale, target in enumerate(whole["target"]):
            assert torch.equal(torch.cat([p["target"][scale] for p in parts]), target)
        assert sum((p["keys"] for p in parts), []) == whole["keys"]
    with pytest.raises(ValueError, match="not a non-empty part"):
        replace_shard(trainer.sampler, (3, 3))


def replace_shard(sampler, shard):
    """The same sampler for one share of each batch."""
    from ts2d_xray.train.sampling import PatchSampler

    return PatchSampler(sampler.cases, sampler.patch_size, sampler.batch_size, sampler.augmentation,
                        sampler.input_size, sampler.ds_scales, sampler.oversample, sampler.seed, sampler.masked,
                        shard)


def test_two_processes_reproduce_the_one_process_loss_with_partial_labels(tmp_path):
    """Cases with unlabelled structures (real films): the loss normalises over the global batch."""
    from ts2d_xray.dataset import finalize

    dataset = synthetic_dataset(tmp_path / "Dataset901_Partial")
    for case in ("s1_000", "s3_000", "s4_000"):
        record_path = dataset / "cases" / f"{case}.json"
        record = json.loads(record_path.read_text())
        record["unlabelled_structures"] = ["spleen"] if case != "s4_000" else ["spleen", "liver"]
        record_path.write_text(json.dumps(record))
    meta = json.loads((dataset / "dataset.json").read_text())
    finalize(dataset, meta["structures"], meta["groups"], {k: meta[k] for k in ("kind", "preset", "seed",
                                                                                 "spacing", "shape")})
    epochs = 8
    one = _one_process(dataset, tmp_path / "one", epochs)
    done = _torchrun(*_train_args(dataset, tmp_path / "two", epochs))
    assert done.returncode == 0, done.stderr[-3000:]
    fold = one.fold_dir.relative_to(tmp_path / "one")
    np.testing.assert_allclose(_losses(tmp_path / "two" / fold), _losses(one.fold_dir), rtol=0.01, atol=1e-3)
