"""A training run in memory: ``Run`` (where it is: the counters a checkpoint saves, the last figures, the
clocks), its loss ``Window``, the ``Optimization`` (Adam, schedule, gradient scaler) and the ``Setup`` the
epochs use. (A run's checkpoint folders on disk: :mod:`liif.train.run_state`.)"""
from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from liif.compute import Compute
from liif.data.sampling import FixedScale, ImplicitDownsampled
from liif.models import ImplicitDecoder
from liif.train.config import Config, Optim
from liif.train.outputs import Output
from liif.train.processes import Procs
from liif.train.step import Forward


@dataclass
class Window:
    """This rank's losses since the last log row, and when the window opened (for samples/s)."""

    loss: float = 0.0
    n: int = 0
    start: float = field(default_factory=time.monotonic)


@dataclass
class Run:
    """Where the run is: the counters a checkpoint saves, the last figures logged, the clocks, and what it
    is doing (named, with the step, by the error when a collective fails)."""

    epoch: int = 0  # epochs completed
    it: int = 0  # iterations done in the next epoch (0 at an epoch boundary)
    step: int = 0  # optimisation steps done
    best: float = -math.inf  # best validation PSNR (rank 0)
    loss: float = math.nan  # mean over the ranks of the last log row's window
    samples_per_s: float = math.nan
    stopped: bool = False  # by --max-minutes or by the end of train.budget_minutes
    budget_spent: bool = False  # the run ended because its train.budget_minutes were spent (not a cut run)
    train_s: float = 0.0  # training seconds of earlier processes of this run (from the checkpoint)
    clock: float = 0.0  # monotonic time this run's training clock reads as zero (budget mode)
    final_row: dict[str, Any] = field(default_factory=dict)  # the log row of the budget's last step
    doing: str = "setting up"
    last_saved: float = 0.0  # monotonic time 'last' was last written
    saved: str = ""  # the newest checkpoint this run wrote or resumed from, with its step ("" before any)
    window: Window = field(default_factory=Window)
    nonfinite: int = 0  # steps in a row whose loss was not finite on some rank

    def count(self, loss: float) -> None:
        """One more step done, with this rank's ``loss``."""
        self.step += 1
        self.it += 1
        self.window.loss += loss
        self.window.n += 1


@dataclass
class Optimization:
    """Adam, its MultiStepLR schedule and the fp16 gradient scaler: what a checkpoint saves besides the weights."""

    opt: torch.optim.Adam
    sched: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, model: ImplicitDecoder, t: Optim, settings: Compute) -> Optimization:
        """Adam over the trainable parameters, MultiStepLR, and a gradient scaler that works under fp16 alone."""
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=t.lr)
        return cls(opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=t.milestones, gamma=t.gamma),
                   torch.amp.GradScaler(settings.device.type, enabled=settings.dtype == torch.float16))

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def follow(self, t: Optim) -> None:
        """After loading a checkpoint whose train.lr, milestones or gamma differ from ``t``: the schedule
        goes on with ``t``'s values, at the learning rate ``t`` gives the epochs done (the loaded state
        would otherwise keep the old ones, whatever config.yaml says)."""
        self.sched.base_lrs = [t.lr for _ in self.opt.param_groups]
        self.sched.milestones = Counter(t.milestones)
        self.sched.gamma = t.gamma
        lr = t.lr * t.gamma ** bisect.bisect_right(sorted(t.milestones), self.sched.last_epoch)
        for group in self.opt.param_groups:
            group["lr"], group["initial_lr"] = lr, t.lr


@dataclass
class Setup:
    """What setup builds and the epochs use: the same on every rank but ``val_set`` (rank 0 alone validates)."""

    cfg: Config
    out: Path  # the run folder (rank 0 writes it)
    procs: Procs
    output: Output
    model: ImplicitDecoder
    forward: Forward
    optim: Optimization
    settings: Compute  # the device, the precision that runs (auto resolved once) and its autocast
    train_set: ImplicitDownsampled
    val_set: FixedScale | None
    iters: int  # per epoch
    deadline: float | None  # monotonic time --max-minutes stops the run
    budget_s: float | None  # train.budget_minutes in seconds; None: fixed epochs


def checkpoint_state(s: Setup, run: Run) -> dict[str, Any]:
    """The training state saved beside the weights (state.pt): resuming from it continues the run exactly."""
    return {**s.optim.state_dict(), "epoch": run.epoch, "iter": run.it, "step": run.step, "best_psnr": run.best,
            "config": s.cfg.to_dict(), "precision": s.settings.precision, "train_s": time.monotonic() - run.clock}

