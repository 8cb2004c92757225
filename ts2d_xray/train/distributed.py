"""Distributed data-parallel training: one process per device under ``torchrun``.

``torchrun --nproc_per_node N`` starts N copies of a training, each with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment; :meth:`Distributed.from_environment`
reads them (none set, or ``WORLD_SIZE=1``: the single-process training, unchanged).
With N > 1 processes:

* the process group is NCCL on GPUs (process ``LOCAL_RANK`` of a machine uses
  ``cuda:LOCAL_RANK``) and gloo on CPUs;
* the plans' batch size stays the **global** batch: process r trains on patches
  ``[start_r, stop_r)`` of the global batch that a single process draws for the same
  seed and iteration (:meth:`Distributed.shard`: B // N each, the first B % N processes
  one more; more processes than patches is refused).  So N processes train on the very
  batches one process would (:class:`~ts2d_xray.train.sampling.PatchSampler` ``shard``);
* each process's loss is weighted by ``N * b_r / B`` (``b_r``: its patches), the batch
  Dice sums over the global batch (nnU-Net's all-gather), and DistributedDataParallel
  averages the gradients: the step is the single process's step on the global batch,
  up to float rounding, for data sets whose labels cover every structure.  Where a
  case leaves structures unlabelled, the BCE and the count of labelled structures are
  normalised per process (a warning says so);
* the logged training loss is the mean over processes (all-reduce), the global batch's;
* validation, the training log, checkpoints and anything else written happen once, in
  process 0; the others wait at a barrier.  Checkpoints hold the plain network's weights,
  so a training may resume with another number of processes.

Example (two processes on the CPU; see docs/scaling.md)::

    torchrun --nproc_per_node 2 -m ts2d_xray.cli train DATASET -o MODEL_DIR --device cpu
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

import torch
import torch.distributed as dist
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from ts2d_xray.device import resolve_device

__all__ = ["ENVIRONMENT", "Distributed"]

#: The variables torchrun sets in each process it starts.
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class Distributed:
    """Where this process stands in a distributed training (a single process: rank 0 of 1).

    Every method is a no-op (or the identity) for a single process, so the trainer runs
    the same code either way.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, local_world_size: int = 1):
        if not 0 <= rank < world_size or not 0 <= local_rank < local_world_size:
            raise ValueError(f"rank {rank} of {world_size} (local {local_rank} of {local_world_size}): "
                             "not a valid place in a distributed training")
        self.rank, self.world_size = rank, world_size
        self.local_rank, self.local_world_size = local_rank, local_world_size
        self._owns_group = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Distributed:
        """The place torchrun gave this process; a single process without its variables or with ``WORLD_SIZE=1``.

        Raises:
            ValueError: Only some of the variables set, or values that are not integers.
        """
        present = [k for k in ENVIRONMENT if k in env]
        if not present:
            return cls()
        if len(present) != len(ENVIRONMENT):
            raise ValueError(f"torchrun sets {', '.join(ENVIRONMENT)}; only {', '.join(present)} set: "
                             "start a distributed training with torchrun")
        try:
            values = [int(env[k]) for k in (*ENVIRONMENT, "LOCAL_WORLD_SIZE") if k in env]
        except ValueError:
            raise ValueError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers, got "
                             + ", ".join(f"{k}={env.get(k)!r}" for k in ENVIRONMENT)) from None
        rank, world, local = values[:3]
        if world == 1:
            return cls()
        return cls(rank, world, local, values[3] if len(values) == 4 else world)

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that validates, logs and writes."""
        return self.rank == 0

    # --- setup ----------------------------------------------------------------------
    def start(self, device: str) -> torch.device:
        """This process's device; with several processes, also the process group (NCCL on GPUs, gloo on CPUs).

        Raises:
            ValueError: A bad device name, ``cuda:N`` with several processes (each takes
                ``cuda:LOCAL_RANK``), or fewer GPUs than processes on this machine.
        """
        if not self.active:
            return resolve_device(device)
        if device.startswith("cuda:"):
            raise ValueError(f"device {device!r}: under torchrun each process uses cuda:LOCAL_RANK; pass 'cuda'")
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise ValueError(f"process {self.local_rank} of this machine needs cuda:{self.local_rank}, but torch "
                                 f"sees {torch.cuda.device_count()} GPUs: use --nproc_per_node <= "
                                 f"{torch.cuda.device_count()}")
            resolved = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)
            self._owns_group = True
        elif (dist.get_rank(), dist.get_world_size()) != (self.rank, self.world_size):
            raise ValueError(f"the process group is rank {dist.get_rank()} of {dist.get_world_size()}, "
                             f"the environment says {self.rank} of {self.world_size}")
        return resolved

    def close(self) -> None:
        """Destroy the process group if :meth:`start` made it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False

    def shard(self, batch_size: int) -> tuple[int, int]:
        """``(start, stop)``: this process's patches of a global batch (B // N each, the first B % N one more).

        Raises:
            ValueError: More processes than patches in a batch.
        """
        if self.world_size > batch_size:
            raise ValueError(f"{self.world_size} processes share a batch of {batch_size} patches (the plans' "
                             f"batch_size): each needs at least one; use --nproc_per_node <= {batch_size}")
        base, extra = divmod(batch_size, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def loss_weight(self, batch_size: int) -> float:
        """``N * b_r / B``: the mean over processes of weighted per-process means is the global batch's mean.

        1.0 exactly for one process or a batch that N divides.
        """
        start, stop = self.shard(batch_size)
        return self.world_size * (stop - start) / batch_size

    def share_batch_dice(self, loss: torch.nn.Module) -> None:
        """Make every batch Dice in ``loss`` sum over the global batch (nnU-Net's ``ddp``: all-gathered sums)."""
        if not self.active:
            return
        for module in loss.modules():
            if isinstance(module, MemoryEfficientSoftDiceLoss) and module.batch_dice:
                module.ddp = True

    def wrap(self, network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train with: ``network`` itself, or it in DistributedDataParallel.

        ``find_unused_parameters``: some parameters get no gradient (the coarsest
        deep-supervision output has loss weight 0; a frozen encoder); DistributedDataParallel
        leaves them untouched (gradient None), as a single process does.  Without it, the
        second iteration fails.  (torch may warn that it found no unused parameter: it
        looks from the network's outputs, and the coarsest output is computed, just not
        in the loss.)
        """
        if not self.active:
            return network
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids, find_unused_parameters=True)

    # --- communication --------------------------------------------------------------
    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over processes (the value itself for one process)."""
        if not self.active:
            return float(value)
        total = value.detach().reshape(1).to(torch.float64)
        dist.all_reduce(total)
        return float(total) / self.world_size

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.active:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Process 0 runs the block first (e.g. checks and writes the folder), then the others (reading it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()
