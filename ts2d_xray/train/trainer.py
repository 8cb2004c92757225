"""The multi-label trainer: nnU-Net v2's training loop for K sigmoid outputs.

One :class:`Trainer` trains one fold of one configuration into an nnU-Net results
folder (see :mod:`.checkpoint`).  What it does, per nnU-Net's ``nnUNetTrainer``:

* SGD, Nesterov momentum 0.99, weight decay 3e-5, poly learning rate stepped per epoch,
  gradient norm clipped at 12; on CUDA, mixed precision with a gradient scaler;
* deep supervision with nnU-Net's loss weights (:mod:`.loss`); batches of
  :mod:`.sampling` (a third of each batch centred on a structure);
* after each epoch, Dice per structure on the validation cases (whole images,
  sigmoid > 0.5), logged to ``training_log.jsonl`` (:mod:`.training_log`); ``checkpoint_latest.pth`` every
  ``save_every`` epochs, ``checkpoint_best.pth`` on a better moving-average Dice,
  ``checkpoint_final.pth`` at the end.

Everything that can be wrong with the input is checked before the first iteration
(and before anything is written): the split, every case's files and labels, the plans.
Under ``torchrun`` it trains with DistributedDataParallel on the same global batches
(:mod:`.distributed`); process 0 validates and writes.

Reuse (e.g. for radiographs): pass another data set, ``in_channels``, an
``augmentation``, ``initial_weights`` (a state dict or checkpoint) and a ``planner``
(plans that keep a pretrained network's architecture); ``config.freeze_encoder_epochs``
trains only the decoder for the first epochs.  :mod:`.adapt` does all of this to turn a
coronal model into a radiograph model.

Example:
    >>> from ts2d_xray.dataset import load_dataset
    >>> from ts2d_xray.train import Trainer, TrainOptions, get_config
    >>> trainer = Trainer("models", load_dataset("Dataset501_Coronal"), get_config("tiny"),  # doctest: +SKIP
    ...                   TrainOptions(device="cpu", fold=0))
    >>> result = trainer.fit()  # doctest: +SKIP
    >>> result.history[-1]["dice"]  # Dice per structure of the last epoch  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from ts2d_xray.dataset import Dataset
from ts2d_xray.errors import InputError
from ts2d_xray.io.files import json_default, read_json, write_json
from ts2d_xray.nnunet.checkpoint import load_weights, save_checkpoint
from ts2d_xray.nnunet.layout import (BEST, CONFIGURATION, DATASET_FILE, FINAL, FINGERPRINT_FILE, LATEST, PLANS_FILE,
                                     fold_folder, trainer_folder)
from ts2d_xray.nnunet.network import build_network, input_divisor
from ts2d_xray.nnunet.predict import whole_image_logits
from ts2d_xray.train.checkpoint import TrainingState
from ts2d_xray.train.config import TrainConfig, get_config
from ts2d_xray.train.data import RawCase, TrainingCase, check_channels, prepare_case, read_cases
from ts2d_xray.train.distributed import Distributed
from ts2d_xray.train.loss import MultiLabelDiceBCELoss, build_loss, deep_supervision_scales
from ts2d_xray.train.options import TrainOptions, TrainResult
from ts2d_xray.train.plans import check_plans, dataset_fingerprint, plan
from ts2d_xray.train.sampling import BatchSource, PatchSampler, iterate_batches
from ts2d_xray.train.splits import fold_cases, write_splits
from ts2d_xray.train.training_log import LOG_FILE, append_record, read_log
from ts2d_xray.train.transforms import NnUNetAugmentation, input_size_of
from ts2d_xray.train.validation import DiceCounts

__all__ = ["Trainer", "train"]

log = logging.getLogger(__name__)

#: Poly learning-rate exponent (nnU-Net).
POLY_EXPONENT = 0.9
#: Weight of the newest epoch in the moving-average Dice (nnU-Net's ``ema_fg_dice``).
EMA_WEIGHT = 0.1


class Trainer(TrainingState):
    """Train one fold of one configuration on a data set.

    Args:
        model_dir: ``MODEL_DIR``; the results go to ``MODEL_DIR/<trainer>__<plans>__2d``.
        dataset: A data set opened with :func:`ts2d_xray.dataset.load_dataset`.
        config: A :class:`TrainConfig` or a preset name.
        options: Device, fold, seed, resume, workers, progress bar.
        initial_weights: A state dict or checkpoint to start from (matching tensors
            only, see :func:`ts2d_xray.train.checkpoint.load_weights`); ignored on resume.
        in_channels: Network inputs; a 1-channel data set is repeated to fill them.
        augmentation: ``aug(image, masks) -> (image, masks)`` on patches (see
            :mod:`ts2d_xray.train.transforms`); default :class:`NnUNetAugmentation`.
        planner: ``planner(fingerprint, dataset_meta, config, *, in_channels,
            channel_source) -> plans`` instead of :func:`~ts2d_xray.train.plans.plan`,
            called when the model folder has no ``plans.json`` yet (e.g. plans that keep
            a pretrained network's architecture, see :mod:`ts2d_xray.train.adapt`).
    """

    def __init__(self, model_dir: str | PathLike, dataset: Dataset, config: TrainConfig | str = "default",
                 options: TrainOptions = TrainOptions(), *, initial_weights: Mapping[str, Any] | None = None,
                 in_channels: int | None = None, augmentation: Callable | None = None,
                 planner: Callable[..., dict] | None = None):
        self.config = get_config(config) if isinstance(config, str) else config
        self.options = options
        self.dataset = dataset
        self.trainer_dir = trainer_folder(model_dir, self.config)
        self.fold_dir = fold_folder(self.trainer_dir, options.fold)
        self.initial_weights = initial_weights
        self.in_channels = in_channels
        self.augmentation = augmentation
        self.planner = planner or plan
        self.current_epoch = 0
        self.logging: dict[str, list] = {k: [] for k in (
            "mean_fg_dice", "ema_fg_dice", "dice_per_class_or_region", "train_losses", "val_losses", "lrs",
            "epoch_start_timestamps", "epoch_end_timestamps")}
        self.best_ema: float | None = None
        self.skipped_weights: tuple[str, ...] = ()
        self.dist = Distributed.from_environment()
        self._prepared = False

    # --- setup ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Check everything, plan, load the data and build the network (idempotent)."""
        if self._prepared:
            return
        self.device = self.dist.start(self.options.device)
        with self.dist.main_first():  # process 0 checks and writes the folder, then the others read it
            raw, train_ids, val_ids, resume_from = self._prepare_folder()
        self._setup_training(raw, train_ids, val_ids)
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.initial_weights is not None:
            self.skipped_weights = tuple(load_weights(self.network, self.initial_weights))
            if self.skipped_weights and self.dist.is_main:
                log.warning("initial_weights: %d tensors of another shape keep their initialisation: %s",
                            len(self.skipped_weights), ", ".join(self.skipped_weights[:6]))
        self.model = self.dist.wrap(self.network, self.device)  # the network itself for one process
        self._prepared = True

    def _prepare_folder(self) -> tuple[dict[str, RawCase], Sequence[str], Sequence[str], Path | None]:
        """Check the inputs, plan, write the folder: ``(cases read, training ids, validation ids, checkpoint)``."""
        opts, dataset = self.options, self.dataset
        if not opts.resume and any((self.fold_dir / n).exists() for n in (FINAL, LATEST)):
            raise FileExistsError(f"{self.fold_dir} already holds checkpoints; resume to continue it, or "
                                  "choose another model folder or fold")
        resume_from = self._checkpoint_to_resume() if opts.resume else None
        inputs = check_channels(dataset, self.in_channels)
        train_ids, val_ids, new_split = fold_cases(dataset.case_ids, opts.fold, opts.num_folds, dataset.root,
                                                   self.trainer_dir)
        plans, fingerprint, raw = self._plan(inputs, sorted(set(train_ids) | set(val_ids)))
        arch = plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]
        if arch["n_stages"] < 2:
            raise InputError(dataset.root, f"images of {plans['configurations'][CONFIGURATION]['patch_size']} px at "
                                           f"{self.config.spacing_mm or 'native'} mm are too small for a U-Net")
        self.dist.shard(plans["configurations"][CONFIGURATION]["batch_size"])  # enough patches for the processes
        # Inputs are fine: write the folder (as nnU-Net: plans and dataset.json beside the folds).
        self.plans = plans
        self.dataset_json = json.loads(json.dumps(dict(dataset.meta), default=json_default))  # as read back
        if self.dist.is_main:
            self.fold_dir.mkdir(parents=True, exist_ok=True)
            if fingerprint is not None:
                write_json(self.trainer_dir / FINGERPRINT_FILE, fingerprint)
                write_json(self.trainer_dir / PLANS_FILE, plans)
            write_json(self.trainer_dir / DATASET_FILE, self.dataset_json)
            if new_split is not None:
                write_splits(new_split, dataset.case_ids, opts.num_folds)
        return raw, train_ids, val_ids, resume_from

    def _plan(self, inputs: tuple[int, list[int]],
              fold_ids: Sequence[str]) -> tuple[dict, dict | None, dict[str, RawCase]]:
        """``(plans, new fingerprint or None, cases read)``: the folder's plans if planned, else new ones.

        ``inputs`` is ``(in_channels, channel_source)``.  Every fold of a folder shares
        its plans; new plans use every case's statistics.
        """
        dataset, (in_channels, channel_source) = self.dataset, inputs
        plans_path = self.trainer_dir / PLANS_FILE
        if plans_path.is_file():
            plans = read_json(plans_path)
            check_plans(plans, dataset.meta, self.config, plans_path)
            if (plans["ts2d"]["in_channels"], plans["ts2d"]["channel_source"]) != (in_channels, channel_source):
                raise InputError(plans_path, "these plans were made for other network inputs; use another model folder")
            return plans, None, {c.id: c for c in read_cases(dataset, fold_ids)}
        raw = {c.id: c for c in read_cases(dataset)}
        cases = list(raw.values())
        fingerprint = dataset_fingerprint([c.image.array for c in cases], [c.masks.array for c in cases],
                                          [c.image.plane.spacing for c in cases], [c.labelled for c in cases])
        plans = self.planner(fingerprint, dataset.meta, self.config, in_channels=in_channels,
                             channel_source=channel_source)
        return json.loads(json.dumps(plans)), fingerprint, raw  # the plans as plans.json will read back

    def _setup_training(self, raw: Mapping[str, RawCase], train_ids: Sequence[str], val_ids: Sequence[str]) -> None:
        cfg, plans = self.config, self.plans
        configuration = plans["configurations"][CONFIGURATION]
        self.train_cases: list[TrainingCase] = [prepare_case(raw[c], plans) for c in train_ids]
        val = list(val_ids)[: cfg.val_max_cases] if cfg.val_max_cases else list(val_ids)
        self.val_cases: list[TrainingCase] = [prepare_case(raw[c], plans) for c in val]
        self.structures = tuple(plans["ts2d"]["structures"])
        self.divisible_by = list(input_divisor(plans))
        self.ds_scales = deep_supervision_scales(configuration["architecture"]["arch_kwargs"]["strides"])
        # Network: nnU-Net's builder and initialisation, seeded without touching the global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)
            self.network = build_network(plans, deep_supervision=True, initialize=True).to(self.device)
        if cfg.freeze_encoder_epochs and not isinstance(getattr(self.network, "encoder", None), torch.nn.Module):
            raise ValueError(f"freeze_encoder_epochs: {type(self.network).__name__} has no 'encoder' to freeze")
        self.loss = build_loss(len(self.ds_scales), batch_dice=configuration["batch_dice"])
        self.dist.share_batch_dice(self.loss)
        self.val_loss = MultiLabelDiceBCELoss(batch_dice=configuration["batch_dice"])
        self.optimizer = torch.optim.SGD(self.network.parameters(), cfg.initial_lr, weight_decay=cfg.weight_decay,
                                         momentum=cfg.momentum, nesterov=True)
        # nnU-Net's poly schedule, stepped once per epoch: lr = initial_lr * (1 - epoch / epochs) ** 0.9.
        self.lr_scheduler = PolyLRScheduler(self.optimizer, cfg.initial_lr, cfg.epochs, exponent=POLY_EXPONENT)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        augmentation = self.augmentation or NnUNetAugmentation(configuration["patch_size"], cfg.rotation_deg,
                                                               cfg.scaling)
        masked = any(not c.labelled.all() for c in self.train_cases)
        batch = configuration["batch_size"]
        # With partial labels the loss normalises over the global batch itself (.loss).
        self.loss_weight = 1.0 if masked else self.dist.loss_weight(batch)
        self.sampler = PatchSampler(self.train_cases, configuration["patch_size"], batch, augmentation,
                                    input_size_of(augmentation, configuration["patch_size"]), self.ds_scales,
                                    cfg.oversample_foreground, self.options.seed, masked, self.dist.shard(batch))

    # --- training -------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until ``config.epochs`` (from the resumed epoch, if any); return the result."""
        self.prepare()
        cfg, main = self.config, self.dist.is_main
        if main:
            log.info("training %s fold %s on %s x %d: %d training / %d validation cases, patch %s, batch %d, "
                     "epochs %d-%d", self.trainer_dir.name, self.options.fold, self.device, self.dist.world_size,
                     len(self.train_cases), len(self.val_cases), self.sampler.patch_size, self.sampler.batch_size,
                     self.current_epoch, cfg.epochs - 1)
            weights = [c.weight for c in self.train_cases]
            if min(weights) != max(weights):
                log.info("cases drawn by their sampling_weight: %.3g to %.3g, %d of %d cases not 1",
                         min(weights), max(weights), sum(w != 1 for w in weights), len(weights))
        batches = self._batches(self.current_epoch)
        history = read_log(self.fold_dir / LOG_FILE, self.current_epoch) if main else []
        for epoch in range(self.current_epoch, cfg.epochs):
            record = self._epoch(epoch, batches)
            if main:  # the others wait at the barrier of the next epoch's end (or of the end below)
                history.append(record)
                if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
                    save_checkpoint(self.fold_dir / LATEST, self.checkpoint())
        if main:
            save_checkpoint(self.fold_dir / FINAL, self.checkpoint())
        self.dist.barrier()  # every process returns once the final checkpoint is there
        self.dist.close()
        return TrainResult(self.trainer_dir, self.fold_dir, self.current_epoch, tuple(history), self.skipped_weights,
                           self.dist.rank)

    def _batches(self, start_epoch: int) -> Iterator[dict]:
        """Every remaining batch, in order: made here (default on the CPU), or by data-loader workers."""
        iters = self.config.iterations_per_epoch
        source = BatchSource(self.sampler, start_epoch * iters, max(0, self.config.epochs - start_epoch) * iters)
        workers = self.options.num_workers
        if workers is None:  # the machine's cores shared by its processes
            cores = (os.cpu_count() or 2) // self.dist.local_world_size
            workers = 0 if self.device.type == "cpu" else min(8, max(1, cores - 1))
        return iterate_batches(source, workers, pin_memory=self.device.type == "cuda")

    def _epoch(self, epoch: int, batches: Iterator[dict]) -> dict | None:
        """Train an epoch; process 0 validates and logs it (its record; None in the others)."""
        cfg = self.config
        started = time.time()
        self.lr_scheduler.step(epoch)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.network.train()
        # Frozen or not follows from the epoch alone, so a resumed run freezes exactly as
        # an uninterrupted one.
        frozen = epoch < cfg.freeze_encoder_epochs
        self._freeze_encoder(frozen)
        losses = []
        desc = f"epoch {epoch + 1}/{cfg.epochs}" + (" (encoder frozen)" if frozen else "")
        bar = _progress(cfg.iterations_per_epoch, desc, self.options.progress and self.dist.is_main)
        for _ in range(cfg.iterations_per_epoch):
            losses.append(self.train_step(next(batches)))
            bar.update()
            bar.set_postfix_str(f"loss {np.mean(losses):.4f}")
        self.current_epoch = epoch + 1
        if not self.dist.is_main:
            bar.close()
            self.dist.barrier()  # process 0 validates, logs and saves
            return None
        val = self.validate()
        dice = val["dice"]
        mean = float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan
        ema = _moving_average(self.logging["ema_fg_dice"][-1] if self.logging["ema_fg_dice"] else None, mean)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val["loss"], "lr": lr,
                  "mean_dice": mean, "ema_dice": ema, "dice": dict(zip(self.structures, map(float, dice))),
                  "iterations": cfg.iterations_per_epoch, "encoder_frozen": frozen, "seconds": time.time() - started}
        for key, value in (("mean_fg_dice", mean), ("ema_fg_dice", ema), ("dice_per_class_or_region",
                           [float(d) for d in dice]), ("train_losses", record["train_loss"]),
                           ("val_losses", val["loss"]), ("lrs", lr), ("epoch_start_timestamps", started),
                           ("epoch_end_timestamps", time.time())):
            self.logging[key].append(value)
        bar.set_postfix_str(f"loss {record['train_loss']:.4f}, val loss {val['loss']:.4f}, Dice {mean:.3f}")
        bar.close()
        append_record(self.fold_dir / LOG_FILE, record)
        log.info("epoch %d: train loss %.4f, val loss %.4f, mean Dice %.3f (%.1f s)", epoch, record["train_loss"],
                 val["loss"], mean, record["seconds"])
        if not math.isnan(ema) and (self.best_ema is None or ema > self.best_ema):
            self.best_ema = ema
            save_checkpoint(self.fold_dir / BEST, self.checkpoint())
        self.dist.barrier()
        return record

    def _freeze_encoder(self, frozen: bool) -> None:
        """Switch the encoder's gradients off (or on again).

        Its parameters then get no gradient, so SGD leaves them (and their momentum and
        weight decay) untouched, and backpropagation stops at the skip connections.
        InstanceNorm keeps no running statistics, so nothing else of the encoder changes.
        """
        encoder = getattr(self.network, "encoder", None)
        if encoder is None:
            return  # never frozen (prepare checked freeze_encoder_epochs)
        for param in encoder.parameters():
            param.requires_grad_(not frozen)

    def train_step(self, batch: Mapping[str, Any]) -> float:
        """One optimiser step on a batch of :class:`PatchSampler` (this process's share); returns the loss.

        With several processes, the loss is the mean over processes: the global batch's.
        """
        device = self.device
        data = batch["data"].to(device, non_blocking=True)
        target = [t.to(device, non_blocking=True) for t in batch["target"]]
        valid = batch.get("valid")
        valid = [None] * len(target) if valid is None else [valid.to(device, non_blocking=True)] * len(target)
        self.optimizer.zero_grad(set_to_none=True)
        amp = torch.autocast(device.type) if device.type == "cuda" else contextlib.nullcontext()
        with amp:
            output = self.model(data)
            loss = self.loss(output, target, valid)
            if self.loss_weight != 1.0:  # an uneven share of the global batch (see .distributed)
                loss = loss * self.loss_weight
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.optimizer.step()
        return self.dist.mean(loss.detach())

    @torch.no_grad()
    def validate(self) -> dict:
        """Loss and Dice per structure (``(K,)``, nan if absent and not predicted) on the validation cases."""
        counts, losses = DiceCounts(len(self.structures)), []
        for case in self.val_cases:
            logits = whole_image_logits(self.network, case.image, self.divisible_by, self.device)
            target = torch.from_numpy(case.masks)[None]
            valid = torch.from_numpy(case.labelled.astype(np.float32))[None, :, None, None]
            losses.append(float(self.val_loss(logits[None], target, None if case.labelled.all() else valid)))
            counts.add((logits > 0).numpy(), case.masks.astype(bool), case.labelled)  # sigmoid > 0.5
        return {"loss": float(np.mean(losses)) if losses else math.nan, "dice": counts.dice()}


def train(dataset: Dataset | str | PathLike, model_dir: str | PathLike, config: TrainConfig | str = "default",
          options: TrainOptions = TrainOptions(), **kwargs: Any) -> TrainResult:
    """Train one fold: :class:`Trainer` ``(model_dir, dataset, config, options, **kwargs).fit()``.

    ``dataset`` may be a folder; it is opened with :func:`ts2d_xray.dataset.load_dataset`.
    """
    if not isinstance(dataset, Dataset):
        from ts2d_xray.dataset import load_dataset

        dataset = load_dataset(dataset)
    return Trainer(model_dir, dataset, config, options, **kwargs).fit()


def _moving_average(previous: float | None, mean: float) -> float:
    """nnU-Net's ``ema_fg_dice`` after an epoch of mean Dice ``mean`` (nan: no structure to score)."""
    if previous is None or math.isnan(previous):
        return mean
    return previous if math.isnan(mean) else (1 - EMA_WEIGHT) * previous + EMA_WEIGHT * mean


def _progress(total: int, desc: str, enabled: bool) -> Any:  # a tqdm bar
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=True, dynamic_ncols=True)
