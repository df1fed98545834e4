"""This process among the run's processes (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK): its device, and the
collectives, decided once at setup: ``Procs`` alone (the collectives are identities) or ``Group`` (they go
through torch.distributed), so the loop calls them without asking how many processes there are."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from liif.errors import LiifError
from liif.train.config import Config


def init_process_group(backend: str, rank: int, world: int, timeout_s: float) -> None:
    """The process group, with a timeout on every collective, in a key space of its own per torchrun attempt.

    After a worker failure torchrun restarts all workers against the same rendezvous store; without a
    per-attempt prefix the new workers would read the dead ones' addresses and fail to connect."""
    timeout = datetime.timedelta(seconds=timeout_s)
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts the store
    store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")),
                          world, is_master=rank == 0 and not agent, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"liif/attempt-{attempt}/", store), rank=rank,
                            world_size=world, timeout=timeout)


def pick_device(cfg: Config, local_rank: int) -> torch.device:
    """This process's device per ``train.device``: GPU ``local_rank`` under CUDA, else the CPU."""
    want = cfg.train.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LiifError("config key train.device is cuda but no CUDA device is available")
        if local_rank >= torch.cuda.device_count():
            raise LiifError(f"process with local rank {local_rank} has no GPU: this node has "
                            f"{torch.cuda.device_count()}; start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if cfg.train.precision == "fp16":
        raise LiifError("config key train.precision: fp16 needs CUDA; use bf16 on the CPU")
    return torch.device("cpu")


@dataclass(frozen=True)
class Procs:
    """This process among the run's processes (torchrun's RANK, WORLD_SIZE, LOCAL_RANK).

    Alone (rank 0 of 1) the collectives below are identities; ``Group`` runs them over the process
    group. ``processes()`` picks one of the two, once, and the loop calls them without asking."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the rank that logs, validates and writes files."""
        return self.rank == 0

    def connect(self, device: torch.device, timeout_s: float) -> None:
        """Join the process group (collectives time out after ``timeout_s``)."""

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        return [obj]

    def broadcast(self, obj: Any, src: int) -> Any:
        """Rank ``src``'s ``obj`` on every rank (the other ranks pass None)."""
        return obj

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks."""
        return t

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` as trained (under DDP, which averages the gradients over the ranks)."""
        return module


class Group(Procs):
    """One of several processes under torchrun: the collectives go through torch.distributed."""

    def connect(self, device: torch.device, timeout_s: float) -> None:
        if not dist.is_initialized():
            init_process_group("nccl" if device.type == "cuda" else "gloo", self.rank, self.world, timeout_s)

    def gather(self, obj: Any) -> list[Any]:
        views: list[Any] = [None] * self.world
        dist.all_gather_object(views, obj)
        return views

    def broadcast(self, obj: Any, src: int) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        dist.barrier()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.local_rank] if device.type == "cuda" else None)


def processes() -> Procs:
    """This process as torchrun's environment describes it; without torchrun, rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    kind = Group if world > 1 else Procs
    return kind(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def agree_across_ranks(procs: Procs, mine: tuple[Any, ...]) -> None:
    """Stop every rank with one error if any rank starts elsewhere or has different epochs or config."""
    views = procs.gather(mine)
    bad = [r for r, v in enumerate(views) if v != views[0]]
    if bad:
        fields = "(epoch, iteration, step, iterations per epoch, samples per epoch, config hash)"
        raise LiifError(f"ranks disagree on {fields}: rank 0 has {tuple(views[0])}, rank {bad[0]} has "
                        f"{tuple(views[bad[0]])}; every node must run the same config on the same data")

