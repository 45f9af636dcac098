"""Several processes (ranks) for one job: torch.distributed over a file rendezvous, and the collectives it uses.

A job asked for `gpus: N` runs as N ranks. Each rank runs the same engine code on the same data, seed and
configuration, so everything that is deterministic (the split, the initial weights, each epoch's shuffle, the
validation metrics) agrees without a message; the ranks talk only where they must: the teacher pass (each rank
computes a share of the rows, all_gather gives every rank all of them), the gradients (DistributedDataParallel),
the epoch's loss, the stop decision, and choices made by one rank alone (searches).
The rendezvous is a torch.distributed FileStore in the job's folder: the sandbox has no network but loopback,
which gloo uses; NCCL is used when there is one CUDA device per rank.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

STOP_EVERY = 8  # training steps between the ranks' agreements on stopping: each one is a collective
DEFAULT_TIMEOUT_S = 1800  # a collective waiting longer than this fails (rank 0 alone running a student search)


def plan_ranks(gpus: object, device: str | None = None) -> tuple[int, str | None]:
    """(ranks, backend) for a request's `gpus`: absent, 0 or 1 is one process; N > 1 is N ranks, on NCCL when
    CUDA has N devices (and the config does not ask for the CPU), else gloo on the CPU."""
    world = gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 1 else 1
    if world == 1:
        return 1, None
    cuda = device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() >= world
    return world, "nccl" if cuda else "gloo"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the job's ranks; the default is a job of one process (no collectives)."""

    rank: int = 0
    world: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        """Whether there are other ranks to agree with."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: it alone writes checkpoints, caches and the report, and reads the stop file."""
        return self.rank == 0

    @property
    def device(self) -> str | None:
        """The device a rank trains on when the ranks decide it (NCCL: one GPU each; gloo: the CPU)."""
        if self.backend == "nccl":
            return f"cuda:{self.rank}"
        return "cpu" if self.backend == "gloo" else None

    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        # NCCL moves only CUDA tensors; gloo moves CPU ones.
        return tensor.to(f"cuda:{self.rank}" if self.backend == "nccl" else "cpu")

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (the stop decision, a failure)."""
        if not self.active:
            return flag
        value = self._comm(torch.tensor([1.0 if flag else 0.0]))
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def agree_to_stop(self, should_stop: Callable[[], bool] | None, step: int) -> bool:
        """Whether to stop before training step `step`: `should_stop()`, which several ranks (only rank 0 reads the
        stop file) decide together, every STOP_EVERY steps."""
        asked = should_stop is not None and should_stop()
        if not self.active:
            return asked
        return step % STOP_EVERY == 0 and self.any(asked)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum over the ranks (same device and dtype as `tensor`)."""
        if not self.active:
            return tensor
        value = self._comm(tensor.detach().clone())
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value.to(tensor.device)

    def share(self, rows: int) -> slice:
        """This rank's rows of `rows` (every world-th row from its rank): shares differ by at most one row."""
        return slice(self.rank, rows, self.world)

    def gather_rows(self, part: torch.Tensor, rows: int) -> torch.Tensor:
        """All rows, from each rank's `part` (its `share` of them), on the CPU."""
        if not self.active:
            return part
        longest = -(-rows // self.world)
        padded = part.new_zeros((longest, *part.shape[1:]))
        padded[: len(part)] = part
        parts = [self._comm(torch.empty_like(padded)) for _ in range(self.world)]
        dist.all_gather(parts, self._comm(padded))
        whole = part.new_empty((rows, *part.shape[1:]))
        for rank, gathered in enumerate(parts):
            count = len(range(rank, rows, self.world))
            whole[rank :: self.world] = gathered[:count].cpu()
        return whole

    def from_main(self, value: object) -> object:
        """Rank 0's `value` on every rank (a choice only rank 0 made, or may make)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=torch.device(f"cuda:{self.rank}") if self.nccl else None)
        return box[0]

    @property
    def nccl(self) -> bool:
        return self.backend == "nccl"


SINGLE = Ranks()


def data_parallel(model: nn.Module, ranks: Ranks) -> nn.Module:
    """`model` itself, or wrapped in DistributedDataParallel when there are several ranks."""
    if not ranks.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[ranks.rank] if ranks.nccl else None)


def join(rank: int, world: int, backend: str, store_file: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks:
    """Join the job's process group through the FileStore at `store_file` (all ranks name the same new file)."""
    if backend == "gloo":
        # The sandbox's network namespace has loopback only, and no /etc/hosts to resolve the host name by.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        if not os.access("/dev/shm", os.W_OK):  # bubblewrap's /dev may lack a writable /dev/shm
            os.environ.setdefault("NCCL_SHM_DISABLE", "1")
    dist.init_process_group(
        backend,
        init_method=f"file://{store_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    logger.info("rank %d of %d joined (%s)", rank, world, backend)
    return Ranks(rank, world, backend)


def leave(ranks: Ranks) -> None:
    """Leave the process group (a no-op for a single process)."""
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()
