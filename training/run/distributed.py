"""Data-parallel training over several processes (PyTorch DistributedDataParallel under torchrun).

``torchrun --nproc-per-node N -m training.train ...`` (or ``geoseg train --nproc N ...``, which
starts torchrun itself through :func:`launch`) runs N copies of the training; :func:`join` turns
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``) into a :class:`Group`: NCCL with one GPU per process
(``cuda:LOCAL_RANK``) on CUDA, gloo on the CPU. Without that environment :func:`join` returns
:data:`SINGLE`, whose every method is the identity, so a plain run does exactly what it did
before distributed training existed.

How the work is shared (see docs/distributed.md):

- training: every process computes the same seeded sequence of draws for the epoch
  (``training.data.sources.epoch_draws``, ``steps x batch x world_size`` long) and takes every
  ``world_size``-th of it (:meth:`Group.share`), so the processes' batches of step k together
  are exactly the draws a single process with the global batch would take at step k;
- validation: each process scores a contiguous block of the validation images
  (:meth:`Group.share_source`, rank 0 the first block) with the weights that rank 0 saves,
  and the confusion matrices are summed (:meth:`Group.sum`): integer counts, so the sum equals
  one process's matrix exactly.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from common.cli import fail
from training.data.sources import Sample, SampleSource
from training.run.device import resolve_device

T = TypeVar("T")


class DistributedError(RuntimeError):
    """The training processes cannot go on together (they disagree, or torchrun's environment
    is incomplete); the message is one line."""
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (its environment names a world size)."""
    return "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run, and the collective steps training needs.

    ``rank`` / ``world_size``: this process's number and the number of processes in all (every
    machine); ``local_rank`` / ``local_processes``: the same on this machine; ``device``: where
    this process computes; ``backend``: ``nccl``, ``gloo`` or None for a single plain process.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_processes: int = 1
    backend: Optional[str] = None

    @property
    def active(self) -> bool:
        """Whether a process group is running (torchrun started this process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints, writes checkpoints, metrics and pictures."""
        return self.rank == 0

    def share(self, draws: Sequence[T]) -> list[T]:
        """This process's part of a sequence every process computes alike: every
        ``world_size``-th item from position ``rank``. Disjoint across ranks; their union is
        ``draws``; with a per-process batch B, the ranks' k-th batches are items
        ``k*B*world_size .. (k+1)*B*world_size - 1``, the k-th global batch."""
        return list(draws[self.rank::self.world_size])

    def block(self, count: int) -> range:
        """This process's contiguous block of ``count`` items (sizes differ by at most one;
        rank 0's block starts at 0)."""
        start = self.rank * count // self.world_size
        return range(start, (self.rank + 1) * count // self.world_size)

    def share_source(self, source: SampleSource) -> SampleSource:
        """The validation images this process scores: its :meth:`block` of ``source``
        (``source`` itself in a single process)."""
        if not self.active:
            return source
        return SourceShare(source, self.block(len(source)))

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel (which averages gradients over the processes
        and starts every process from rank 0's weights), or ``model`` itself."""
        if not self.active:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sync_state(self, model: torch.nn.Module) -> None:
        """Copy rank 0's weights and buffers into every process's ``model``.

        DDP keeps the weights equal but each process's BatchNorm running statistics last saw
        its own batch; after this every process holds exactly what rank 0 saves."""
        if not self.active:
            return
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def sum(self, counts: np.ndarray) -> np.ndarray:
        """Element-wise sum of an integer array over the processes (e.g. confusion matrices)."""
        if not self.active:
            return counts
        tensor = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64)).to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def mean(self, value: float) -> float:
        """Mean of a number over the processes (e.g. each process's mean training loss)."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item()) / self.world_size

    def agree(self, value: Any, what: str) -> None:
        """Raise DistributedError on every process unless all hold the same ``value`` (``what``
        says what it is, for the message)."""
        if not self.active:
            return
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        if any(v != values[0] for v in values):
            raise DistributedError(f"the training processes disagree on {what} (by rank: "
                               f"{', '.join(map(str, values))})")

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Seed torch's generator from (seed, epoch, rank): dropout differs between processes
        yet a resumed run repeats the uninterrupted one. A single process keeps the stream it
        always had (restored from the checkpoint on --resume)."""
        if self.active:
            torch.manual_seed(int(np.random.SeedSequence([seed, epoch, self.rank, 104729])
                                  .generate_state(1)[0]))

    @contextlib.contextmanager
    def quiet_unless_main(self) -> Iterator[None]:
        """Standard output of every rank but 0 goes nowhere (errors still reach stderr)."""
        if self.is_main:
            yield
            return
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield

    def tag(self, message: str) -> str:
        """``message`` prefixed with the rank, on ranks other than 0."""
        return message if self.is_main else f"rank {self.rank}/{self.world_size}: {message}"

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Group()
"""No process group: one plain process (its device is set by the caller)."""


class SourceShare:
    """The images ``indices`` of ``source``, as a source of their own (item i = indices[i])."""

    def __init__(self, source: SampleSource, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = list(indices)
        self.keys = [source.keys[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Sample:
        return self.source.load(self.indices[index])

    def size(self, index: int) -> tuple[int, int]:
        return self.source.size(self.indices[index])


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise DistributedError(f"torchrun's environment lacks a valid {name} "
                           f"(start with torchrun or geoseg train --nproc)") from None


def join(device_name: str) -> Group:
    """This process's :class:`Group`: under torchrun, start the process group (NCCL on CUDA
    with ``cuda:LOCAL_RANK``, else gloo); otherwise :data:`SINGLE` on ``device_name``.

    Raises DeviceError (one line) when this machine lacks a GPU per process."""
    if not under_torchrun():
        return Group(device=resolve_device(device_name))
    rank, world, local_rank, local = map(_env_int, TORCHRUN_VARIABLES)
    device = resolve_device(device_name, local_rank, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device)
    else:
        dist.init_process_group(backend)
    return Group(device, rank, world, local_rank, local, backend)


def default_threads(processes: int) -> int:
    """CPU threads per process when ``processes`` share this machine (its usable cores
    divided evenly, at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // processes)


def launch(processes: int, argv: Sequence[str], module: str = "training.train") -> int:
    """Run ``python -m <module> <argv>`` in ``processes`` processes on this machine through
    torchrun (torch.distributed.run, standalone rendezvous on a free port); returns the exit
    code: 0, or the first failed process's (a process that printed its own one-line error
    exits 2; any other failure gets one line here)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(default_threads(processes)))
    options = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(processes), "--module", module])
    options.training_script_args = list(argv)  # not through torchrun's parser: --nproc would
    # be taken for an abbreviation of its --nproc-per-node
    # torchrun's agent logs each failure at length; the processes print their own errors
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(options)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == 2:  # that process printed its one-line error already
            return 2
        how = (f"signal {failure.signal_name()}" if failure.exitcode < 0
               else f"exit code {failure.exitcode}")
        return fail(f"training process rank {rank} of {processes} ended with {how} "
                    f"(its output is above)", 1)
    return 0
