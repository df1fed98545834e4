"""The training loop: one process or many (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK).

``_train`` reads top to bottom: setup (device, process group, model and optimizer, data, start or
resume), then per epoch its batches (``train_epoch``: ``train_step``, a log row every ``log.every``
steps, 'last' refreshed by time or iteration count) and ``end_of_epoch`` (MultiStepLR step,
validation with the paper's PSNR protocol, checkpoints). In budget mode (``train.budget_minutes``) the
epochs go on until the training clock reaches the budget, the learning rate follows the clock's fraction
of the budget (milestone / epochs) instead of the epoch count, and ``end_of_budget`` closes the run.
A step: forward (layer-0 folded query, optional autocast), L1 loss in the normalised space, backward
(DDP averages gradients), Adam.

Two questions are answered once, at setup, not at every use: one process or several (``Procs``,
whose collectives are identities, or ``Group``), and rank 0 or not (rank 0 alone logs, validates and
writes files: it gets a ``MainOutput`` and the validation set, the other ranks an ``Output`` that
writes nothing).
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from liif import compute
from liif.compute import Compute, set_tf32
from liif.data.folders import ImageFolder, PairedFolders, div2k
from liif.data.sampling import FixedScale, ImplicitDownsampled
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.models import ImplicitDecoder, build
from liif.models.decoder import fast_forward as folded_forward
from liif.train import run_state as ckpt
from liif.train.config import Config, Optim, dump

CSV_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_s", "val_psnr"]
# The model as trained, (inp, coord, cell) -> prediction: a Step, under DDP with several processes,
# compiled with train.compile (torch.compile is typed as returning a plain callable).
Forward = Callable[..., torch.Tensor]


class Step(nn.Module):
    """The trained function as a module (so DDP can wrap it): normalised LR + queries -> prediction."""

    def __init__(self, model: ImplicitDecoder, fold: bool, channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.fold, self.channels_last = model, fold, channels_last
        if channels_last:
            # Module.to(memory_format=...) is documented and works; torch's overloads omit it
            model.encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return folded_forward(self.model, inp, coord, cell) if self.fold else self.model(inp, coord, cell)


def train_step(forward: Forward, model: ImplicitDecoder, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batch: dict[str, torch.Tensor], device: torch.device, amp_dtype: torch.dtype | None) -> float:
    """One optimisation step on one (per-rank) batch; returns the L1 loss in the normalised space."""
    inp = model.normalize(batch["inp"].to(device, non_blocking=True))
    coord = batch["coord"].to(device, non_blocking=True)
    cell = batch["cell"].to(device, non_blocking=True)
    gt = (batch["gt"].to(device, non_blocking=True) - model.out_mean.view(3)) / model.out_std.view(3)
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with ctx:
        pred = forward(inp, coord, cell)
    loss = F.l1_loss(pred.float(), gt)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.item()


def epoch_batches(n: int, batch: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's batches of one epoch: ``DistributedSampler`` (shuffled, seeded, incomplete tail dropped)
    cut into per-rank batches of ``batch // world``.

    The sampler's permutation depends only on (seed, epoch) and rank r takes positions r, r + world, ...
    of it, so at step k the ranks together hold positions k*batch .. (k+1)*batch - 1: exactly the
    k-th batch of a single-process run with the same global batch, split into disjoint parts.
    """
    # The sampler shuffles with seed + epoch; spread the seeds so seed s, epoch e+1 is not seed s+1, epoch e.
    # The sampler only takes len() of its dataset; its stub asks for a Dataset, a range of indices does.
    sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=True,  # type: ignore[arg-type]
        seed=seed * 100003, drop_last=True)
    sampler.set_epoch(epoch)
    return list(torch.utils.data.BatchSampler(sampler, batch // world, drop_last=True))


def build_data(cfg: Config, out: Path | None = None) -> tuple[ImplicitDownsampled, FixedScale | None]:
    d = cfg.data.train
    cache_dir = d.cache_dir if d.cache_dir is not None else (out / "cache" if out is not None else None)
    if d.cache == "mmap" and cache_dir is None:
        raise LiifError("config key data.train.cache: mmap needs data.train.cache_dir here")
    images = (div2k(d.div2k, "train", repeat=d.repeat, cache=d.cache, cache_dir=cache_dir) if d.div2k is not None
              else ImageFolder(d.roots, repeat=d.repeat, cache=d.cache, cache_dir=cache_dir))
    assert isinstance(images, ImageFolder)  # div2k without a scale: the HR images alone
    train = ImplicitDownsampled(images, d.inp_size, d.scale_min, d.scale_max, d.augment, d.sample_q, cfg.train.seed)
    v = cfg.data.val
    val = None
    if v.hr is not None:
        src: PairedFolders | ImageFolder = (PairedFolders(v.lr, v.hr, first_k=v.first_k) if v.lr is not None
                                            else ImageFolder(v.hr, first_k=v.first_k))
        val = FixedScale(src, v.scale)
    return train, val


@torch.no_grad()
def validate(model: ImplicitDecoder, val: FixedScale, y_channel: bool, device: torch.device) -> float:
    """Mean PSNR over whole images rendered at the validation scale (Y + shave s, or RGB + shave s + 6)."""
    from liif.eval.metrics import psnr  # noqa: PLC0415 - written by the evaluation work
    from liif.render import render

    was_training = model.training
    model.eval()
    values = []
    for i in range(len(val)):
        lr, hr = val[i]
        pred = render(model, lr.to(device), (hr.shape[-2], hr.shape[-1]))
        sr = model.denormalize(pred.permute(1, 2, 0)).permute(2, 0, 1).clamp(0, 1).cpu()
        shave = val.scale if y_channel else val.scale + 6
        values.append(float(psnr(sr, hr, shave=shave, y_channel=y_channel)))
    model.train(was_training)
    return sum(values) / len(values)


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


# -- one process or many: decided once -----------------------------------------------------------------------

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

    def from_rank0(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's values of ``t`` on every rank."""
        return t

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

    def from_rank0(self, t: torch.Tensor) -> torch.Tensor:
        dist.broadcast(t, 0)
        return t

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


# -- rank 0 or not: decided once -----------------------------------------------------------------------------

class Output:
    """What a rank other than 0 writes: nothing. Rank 0 gets a ``MainOutput``, which writes the messages,
    the run folder and the progress bar, so the loop calls these methods on every rank without asking."""

    def say(self, text: str) -> None:
        """One line on stderr."""

    def keep_previous_run(self) -> None:
        """--restart: move the previous run's files into ``out/previous-N``."""

    def set_aside(self, damaged: list[str]) -> None:
        """--resume: rename the damaged checkpoint folders out of the way."""

    def begin(self, step: int, total: int | None, done: int) -> None:
        """Write config.yaml, cut log.csv back to ``step``; open TensorBoard and the bar (``done`` of ``total``)."""

    def stepped(self) -> None:
        """One more iteration on the progress bar."""

    def show(self, loss: float, samples_per_s: float) -> None:
        """The latest figures beside the progress bar."""

    def note(self, text: str) -> None:
        """A line above the progress bar (none without one)."""

    def log(self, row: dict[str, Any]) -> None:
        """A row of log.csv (and TensorBoard)."""

    def save(self, names: list[str], model: ImplicitDecoder, state: dict[str, Any]) -> None:
        """Checkpoint folders ``out/checkpoints/NAME`` for each name, all with ``state``."""

    def close(self) -> None:
        """Close the progress bar and TensorBoard."""


class MainOutput(Output):
    """Rank 0's output: stderr, the run folder (config.yaml, log.csv, tb/, checkpoints/) and the progress bar
    (shown when stderr is a terminal, or as --progress says)."""

    bar: tqdm  # made by begin()

    def __init__(self, cfg: Config, out: Path, progress: bool | None) -> None:
        self.cfg, self.out = cfg, out
        self.spec = cfg.model_spec()
        self.show_bar = sys.stderr.isatty() if progress is None else progress
        self.tb: Any = None  # a SummaryWriter with log.tensorboard (imported only then: an optional package)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr)

    def keep_previous_run(self) -> None:
        moved = move_aside(self.out)
        if moved:
            self.say(f"--restart: the previous run's files are kept in {moved}")

    def set_aside(self, damaged: list[str]) -> None:
        for folder in damaged:
            self.say(f"--resume: {folder} is incomplete or unreadable; kept as {set_aside(Path(folder))}")

    def begin(self, step: int, total: int | None, done: int) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(dump(self.cfg))
        _truncate_log(self.out / "log.csv", step)
        if self.cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.out / "tb"))
        self.bar = tqdm(total=total, initial=done, unit="it", dynamic_ncols=True, disable=not self.show_bar)

    def stepped(self) -> None:
        self.bar.update(1)

    def show(self, loss: float, samples_per_s: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", sps=f"{samples_per_s:.1f}")

    def note(self, text: str) -> None:
        if self.show_bar:
            self.bar.write(text)

    def log(self, row: dict[str, Any]) -> None:
        append_row(self.out / "log.csv", row)
        if self.tb is not None:
            for k in ("loss", "lr", "samples_per_s", "val_psnr"):
                if row.get(k, "") != "":
                    self.tb.add_scalar(k, row[k], row["step"])

    def save(self, names: list[str], model: ImplicitDecoder, state: dict[str, Any]) -> None:
        for name in names:
            ckpt.save(self.out / "checkpoints" / name, model, self.spec, state)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the CSV log (the header first when the file is new); missing fields are empty."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_FIELDS})


# -- the run's state -----------------------------------------------------------------------------------------

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
    window: Window = field(default_factory=Window)

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
    def create(cls, model: ImplicitDecoder, t: Optim, device: torch.device, precision: str) -> Optimization:
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=t.lr)
        return cls(opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=t.milestones, gamma=t.gamma),
                   torch.amp.GradScaler(device.type, enabled=precision == "fp16"))

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


@dataclass
class Setup:
    """What setup builds and the epochs use: the same on every rank but ``val_set`` (rank 0 alone validates)."""

    cfg: Config
    procs: Procs
    output: Output
    device: torch.device
    model: ImplicitDecoder
    forward: Forward
    optim: Optimization
    precision: str
    amp_dtype: torch.dtype | None
    train_set: ImplicitDownsampled
    val_set: FixedScale | None
    iters: int  # per epoch
    deadline: float | None  # monotonic time --max-minutes stops the run
    budget_s: float | None  # train.budget_minutes in seconds; None: fixed epochs


def checkpoint_state(s: Setup, run: Run) -> dict[str, Any]:
    """The training state saved beside the weights (state.pt): resuming from it continues the run exactly."""
    return {**s.optim.state_dict(), "epoch": run.epoch, "iter": run.it, "step": run.step, "best_psnr": run.best,
            "config": s.cfg.to_dict(), "precision": s.precision, "train_s": time.monotonic() - run.clock}


# -- the loop ------------------------------------------------------------------------------------------------

def train(cfg: Config, out: Path, resume: bool = False, max_minutes: float | None = None,
          progress: bool | None = None, restart: bool = False, dist_timeout_s: float = 1800.0) -> dict[str, Any]:
    """Train per ``cfg`` into ``out``; returns a summary (steps, epoch, last loss, samples/s, best PSNR).

    Under torchrun a failed or timed-out collective (a rank died, hung or took another path) ends
    every rank with a one-line error naming the rank and the step, instead of a hang."""
    procs = processes()
    run = Run()
    try:
        return _train(cfg, Path(out), procs, run, resume=resume, restart=restart, max_minutes=max_minutes,
                      progress=progress, dist_timeout_s=dist_timeout_s)
    except RuntimeError as e:  # torch.distributed's errors (DistBackendError, gloo/NCCL timeouts) derive from it
        if procs.world == 1:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise LiifError(f"rank {procs.rank} of {procs.world}: {run.doing} at step {run.step} failed: {first} "
                        f"(another rank died, stalled or diverged; collectives time out after {dist_timeout_s:g} s, "
                        f"see --dist-timeout)") from None


def _train(cfg: Config, out: Path, procs: Procs, run: Run, *, resume: bool, restart: bool,
           max_minutes: float | None, progress: bool | None, dist_timeout_s: float) -> dict[str, Any]:
    """The run itself; ``train`` turns a failed collective into a one-line error naming ``run.doing``."""
    t_start = time.monotonic()
    t = cfg.train
    # -- processes and device --------------------------------------------------------------------------------
    device = pick_device(cfg, procs.local_rank)
    procs.connect(device, dist_timeout_s)
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.batch_size % procs.world:
        raise LiifError(f"config key train.batch_size ({t.batch_size}) must be a multiple of the "
                        f"number of processes ({procs.world})")
    output = MainOutput(cfg, out, progress) if procs.main else Output()  # rank 0 alone logs and writes files

    # -- model, optimizer, schedule, precision ---------------------------------------------------------------
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    spec = cfg.model_spec()
    model = build(spec).to(device)
    settings = Compute.resolve(device, t.precision)  # auto: what this hardware runs natively
    precision, amp_dtype = settings.precision, settings.autocast_dtype
    optim = Optimization.create(model, t, device, precision)
    if device.type == "cuda":  # fp32 is full fp32 (cuDNN would use TF32 for convolutions by default)
        set_tf32(settings.tf32)
    cpu = f", {compute.cpu_info().describe()}" if device.type == "cpu" else ""
    output.say(f"training on {device} with {procs.world} process(es), precision {precision} "
               f"(asked {t.precision}){cpu}")

    # -- data ------------------------------------------------------------------------------------------------
    train_set, val_set = build_data(cfg, out)
    iters = len(train_set) // t.batch_size
    if iters == 0:
        raise LiifError(f"the training set has {len(train_set)} samples per epoch, fewer than one batch "
                        f"({t.batch_size}); raise data.train.repeat")
    if not procs.main:
        val_set = None  # rank 0 alone validates

    # -- start or resume: one decision and one state for all ranks -------------------------------------------
    found = choose_checkpoint(out, procs, output, run, resume, restart)
    if found is not None:
        load_checkpoint(found, cfg, model, optim, run)
        output.set_aside(found.damaged)
        e, i = epoch_and_iteration(run.epoch, run.it, iters)
        output.say(f"resumed from {found.path} after step {run.step} (epoch {e}, iteration {i} of {iters})")
    # Every rank must start at the same place with the same epochs, or their collectives pair up wrongly.
    run.doing = "checking that all ranks agree"
    agree_across_ranks(procs, (run.epoch, run.it, run.step, iters, len(train_set),
                               hashlib.sha256(dump(cfg).encode()).hexdigest()[:12]))
    torch.manual_seed(t.seed * 1000 + procs.rank + run.step)  # per-rank stream for anything random in the model
    forward = procs.wrap(Step(model, t.fold, t.channels_last), device)
    s = Setup(cfg, procs, output, device, model, torch.compile(forward) if t.compile else forward, optim,
              precision, amp_dtype, train_set, val_set, iters,
              deadline=None if max_minutes is None else t_start + 60 * max_minutes,
              budget_s=60 * t.budget_minutes if t.budget_minutes > 0 else None)

    # -- epochs (or the budget's time) -----------------------------------------------------------------------
    output.begin(run.step, None if s.budget_s else t.epochs * iters, run.epoch * iters + run.it)
    run.last_saved, run.window = time.monotonic(), Window()  # the clocks of 'last' and of samples/s start now
    run.clock = run.last_saved - run.train_s
    if s.budget_s:
        set_budget_lr(s, budget_drops(t, run.train_s / s.budget_s))
        if run.train_s >= s.budget_s:  # resumed from the end of a finished budget run
            output.say(f"the {t.budget_minutes:g}-minute budget is already spent ({run.train_s:.0f} s): "
                       f"nothing to train")
            run.stopped = run.budget_spent = True
    model.train()
    while (s.budget_s or run.epoch < t.epochs) and not run.stopped:
        row = train_epoch(s, run)
        if row is None:  # --max-minutes or the budget stopped the run mid-epoch ('last' holds where)
            break
        end_of_epoch(s, run, row)
    if run.budget_spent and run.final_row:
        end_of_budget(s, run)
    output.close()
    run.doing = "finishing"
    procs.barrier()
    return summary(run, iters, precision, out / "checkpoints" / "last")


def train_epoch(s: Setup, run: Run) -> dict[str, Any] | None:
    """Epoch ``run.epoch`` from iteration ``run.it`` on. Returns its last log row (``end_of_epoch`` adds the
    PSNR and writes it), or None when --max-minutes stopped the run mid-epoch (after saving 'last') or the
    budget (train.budget_minutes) is spent (``end_of_budget`` then validates and saves)."""
    cfg = s.cfg
    loader = epoch_loader(s, run)
    row: dict[str, Any] = {"step": run.step, "epoch": run.epoch + 1, "lr": s.optim.lr}
    run.doing = f"training epoch {run.epoch + 1}"
    for batch in loader:
        loss = train_step(s.forward, s.model, s.optim.opt, s.optim.scaler, batch, s.device, s.amp_dtype)
        run.count(loss)
        epoch_done = run.it == s.iters
        s.output.stepped()
        now = time.monotonic()
        run.stopped, save_by_time, spent, drops = rank0_decides(s, run, now)
        if s.budget_s:
            set_budget_lr(s, drops)
            run.budget_spent = spent
            run.stopped = run.stopped or spent
        if run.step % cfg.log.every == 0 or epoch_done or run.stopped:
            row = log_row(s, run, now)
            if not (epoch_done or run.budget_spent):  # the epoch's (or budget's) last row waits for the PSNR
                s.output.log(row)
                s.output.show(run.loss, run.samples_per_s)
        if run.budget_spent:
            run.final_row = row  # end_of_budget validates, logs it and saves 'last'
            return None
        if epoch_done:
            return row
        every = cfg.checkpoint.last_every_iters
        if run.stopped or save_by_time or (every and run.step % every == 0):
            s.output.save(["last"], s.model, checkpoint_state(s, run))
            run.last_saved = time.monotonic()
        if run.stopped:
            return None
    return row


def end_of_epoch(s: Setup, run: Run, row: dict[str, Any]) -> None:
    """The schedule steps; rank 0 validates when due, logs the epoch's last row and saves 'last', 'best'
    (a new best PSNR) and 'epoch-N' (every checkpoint.save_every epochs). Every rank waits for it."""
    cfg = s.cfg
    run.doing = f"ending epoch {run.epoch + 1} (rank 0 validates and saves)"
    if not s.budget_s:  # in budget mode the clock, not the epoch, sets the learning rate
        s.optim.sched.step()
    run.epoch, run.it = run.epoch + 1, 0
    names = ["last"] + ([f"epoch-{run.epoch}"] if run.epoch % cfg.checkpoint.save_every == 0 else [])
    due = run.epoch % cfg.data.val.every == 0 or run.epoch == cfg.train.epochs
    close_row(s, run, row, names, due, f"epoch {run.epoch}")


def close_row(s: Setup, run: Run, row: dict[str, Any], names: list[str], validate_now: bool, when: str) -> None:
    """The last row of an epoch or of the budget: rank 0 validates (when ``validate_now``), logs the row with
    the PSNR and saves ``names`` (plus 'best' on a new best PSNR); every rank waits for it."""
    if s.val_set is not None and validate_now:
        row["val_psnr"] = f"{validate(s.model, s.val_set, s.cfg.data.val.y_channel, s.device):.4f}"
        if float(row["val_psnr"]) > run.best:
            names = [*names, "best"]
        run.best = max(run.best, float(row["val_psnr"]))
        s.output.note(f"{when}: val PSNR {row['val_psnr']} dB")
    s.output.log(row)
    s.output.save(names, s.model, checkpoint_state(s, run))
    run.last_saved = time.monotonic()
    s.procs.barrier()


def epoch_loader(s: Setup, run: Run) -> torch.utils.data.DataLoader:
    """This rank's batches of epoch ``run.epoch``, from iteration ``run.it`` on."""
    t = s.cfg.train
    s.train_set.set_epoch(run.epoch)
    batches = epoch_batches(len(s.train_set), t.batch_size, run.epoch, t.seed, s.procs.rank, s.procs.world)
    return torch.utils.data.DataLoader(s.train_set, batch_sampler=batches[run.it:], num_workers=s.cfg.data.workers,
                                       pin_memory=s.device.type == "cuda")


def rank0_decides(s: Setup, run: Run, now: float) -> tuple[bool, bool, bool, int]:
    """(stop now, refresh 'last' now, budget spent, learning-rate drops so far in budget mode), decided by
    rank 0's clock for every rank: the ranks' clocks differ, and every rank must take the same path and
    the same learning rate (or their collectives pair up wrongly and their weights drift apart)."""
    frac = (now - run.clock) / s.budget_s if s.budget_s else 0.0
    flags = torch.tensor([s.deadline is not None and now >= s.deadline,
                          0 < s.cfg.checkpoint.last_every_s <= now - run.last_saved,
                          frac >= 1.0, budget_drops(s.cfg.train, frac)], dtype=torch.int32)
    flags = s.procs.from_rank0(flags)
    return bool(flags[0]), bool(flags[1]), bool(flags[2]), int(flags[3])


def budget_drops(t: Optim, frac: float) -> int:
    """How many learning-rate milestones a budget-mode run has passed at ``frac`` of its budget: milestone
    m falls at m / epochs of the budget, the same place in the schedule as in a fixed-epoch run."""
    return sum(frac >= m / t.epochs for m in t.milestones)


def set_budget_lr(s: Setup, drops: int) -> None:
    for group in s.optim.opt.param_groups:
        group["lr"] = s.cfg.train.lr * s.cfg.train.gamma ** drops


def end_of_budget(s: Setup, run: Run) -> None:
    """The budget is spent: rank 0 validates the final weights, logs the last row with the PSNR and saves
    'last' (and 'best' when it is one). Every rank waits for it."""
    run.doing = "ending the budget (rank 0 validates and saves)"
    close_row(s, run, run.final_row, ["last"], True, f"budget spent at step {run.step}")


def log_row(s: Setup, run: Run, now: float) -> dict[str, Any]:
    """Close the loss window: the loss averaged over every rank's steps since the last row, samples/s; the row."""
    w = run.window
    stats = s.procs.all_sum(torch.tensor([w.loss, w.n], dtype=torch.float64))
    run.samples_per_s = w.n / s.procs.world * s.cfg.train.batch_size / (now - w.start)
    run.loss = float(stats[0] / stats[1])
    run.window = Window(start=now)
    return {"step": run.step, "epoch": run.epoch + 1, "loss": f"{run.loss:.6f}", "lr": s.optim.lr,
            "samples_per_s": f"{run.samples_per_s:.2f}"}


def summary(run: Run, iters: int, precision: str, last: Path) -> dict[str, Any]:
    """What ``liif train`` prints as JSON: where the run ended and its last figures (null where none yet)."""
    # Not stopped, the run ended on an epoch boundary: its last step is that epoch's last iteration.
    e, i = epoch_and_iteration(run.epoch, run.it if run.stopped else 0, iters)
    return {"step": run.step, "epoch": e, "iteration": i, "iterations_per_epoch": iters, "precision": precision,
            "loss": _finite(run.loss), "samples_per_s": _finite(run.samples_per_s), "best_psnr": _finite(run.best),
            "stopped_early": run.stopped and not run.budget_spent, "budget_spent": run.budget_spent,
            "train_s": round(time.monotonic() - run.clock, 1), "checkpoint": str(last)}


# -- start or resume -----------------------------------------------------------------------------------------

@dataclass
class Found:
    """The checkpoint every rank resumes from (read by the rank that holds it), and rank 0's damaged ones."""

    path: str
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    damaged: list[str]


def choose_checkpoint(out: Path, procs: Procs, output: Output, run: Run, resume: bool,
                      restart: bool) -> Found | None:
    """The checkpoint to resume from, or None to start from scratch: one decision for all ranks.

    Every rank looks into its own --out (a shared folder or one per node); all ranks see all findings
    and take the same decision; the rank holding the newest complete checkpoint sends it to the others.
    A torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) always resumes."""
    run.doing = "choosing the checkpoint to resume from"
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume, restart = True, False
    views = procs.gather(survey(out))
    source = start_from(views, out, resume, restart)
    if restart:
        output.keep_previous_run()
    if source is None:
        if resume:
            output.say(f"--resume: {out} holds no earlier run, starting from scratch")
        return None
    run.doing = f"receiving the checkpoint from rank {source}"
    got = procs.broadcast(read_checkpoint(views[source]["found"]) if procs.rank == source else None, source)
    if "error" in got:
        raise LiifError(got["error"])
    return Found(got["found"], got["weights"], got["state"], views[0]["damaged"])


def read_checkpoint(found: str) -> dict[str, Any]:
    """What the rank holding the checkpoint sends: its weights and state, or the error every rank raises."""
    try:
        weights, state = ckpt.read(Path(found))
    except LiifError as e:
        return {"error": str(e)}
    return {"found": str(Path(found)), "weights": weights, "state": state}


def load_checkpoint(found: Found, cfg: Config, model: ImplicitDecoder, optim: Optimization, run: Run) -> None:
    """Weights, optimizer, schedule, scaler and counters from ``found``, whose model must be the configured one.

    Checkpoints written before this version also hold ``rng`` (the torch RNG state); it is ignored, as it
    always was in effect: the model's RNG stream is re-seeded from the step after resuming."""
    state = found.state
    if state["config"]["model"] != cfg.to_dict()["model"]:
        raise LiifError(f"--resume: the model section differs from the checkpoint's ({found.path})")
    try:
        model.load_state_dict(found.weights, strict=True)
    except RuntimeError as e:
        raise LiifError(f"checkpoint {found.path} does not fit the configured model: "
                        f"{str(e).splitlines()[0]}") from None
    optim.load_state_dict(state)
    run.epoch, run.it, run.step, run.best = state["epoch"], state["iter"], state["step"], state["best_psnr"]
    run.train_s = float(state.get("train_s", 0.0))  # absent in checkpoints written before budget mode


def epoch_and_iteration(epochs_done: int, iters_done: int, iters: int) -> tuple[int, int]:
    """(epoch, iteration) of the last step done, both from 1 as in log.csv; (0, 0) before the first step.

    The loop counts completed epochs and iterations done in the next one; a finished epoch is
    reported as its own last iteration, so the summary, the CSV and the resume message agree."""
    if iters_done:
        return epochs_done + 1, iters_done
    return (epochs_done, iters) if epochs_done else (0, 0)


def _finite(x: float) -> float | None:
    """JSON has no NaN or Infinity: a value that does not exist yet is null."""
    return x if math.isfinite(x) else None


def survey(out: Path) -> dict[str, Any]:
    """What this rank finds in its --out: the newest complete checkpoint, its step, damaged ones, history."""
    found, damaged = ckpt.newest(out / "checkpoints")
    history = [str(p) for p in (out / "checkpoints", out / "log.csv")
               if p.is_file() or (p.is_dir() and any(p.iterdir()))]
    return {"found": str(found) if found else "", "step": ckpt.step_of(found) if found else -1,
            "damaged": [str(p) for p in damaged], "history": history}


def start_from(views: list[dict[str, Any]], out: Path, resume: bool, restart: bool) -> int | None:
    """The rank whose checkpoint every rank resumes from, or None to start from scratch.

    Every rank calls this with the same findings (one per rank) and so takes the same decision, or
    raises the same error. A folder that holds an earlier run is never started over silently."""
    if resume and restart:
        raise LiifError("--resume and --restart exclude each other")
    if restart:
        return None
    source = max(range(len(views)), key=lambda r: (views[r]["step"], -r))
    history = [h for v in views for h in v["history"]]
    if resume:
        if views[source]["found"]:
            return source
        if history:
            damaged = [d for v in views for d in v["damaged"]]
            what = f"{', '.join(damaged)} incomplete or unreadable" if damaged else f"found {', '.join(history)}"
            raise LiifError(f"--resume: no complete checkpoint in {out / 'checkpoints'} ({what}); nothing was "
                            f"changed; pass --restart instead to start over (the old files are kept in "
                            f"{out}/previous-N)")
        return None
    if history:
        raise LiifError(f"{out} already holds a run ({', '.join(history)}); pass --resume to continue it, "
                        f"--restart to start over (the old files are kept in {out}/previous-N), "
                        f"or choose another --out")
    return None


def move_aside(out: Path) -> Path | None:
    """--restart: move the previous run's files into ``out/previous-N`` (never delete them)."""
    names = [n for n in ("checkpoints", "log.csv", "log.dropped.csv", "config.yaml", "tb") if (out / n).exists()]
    if not names:
        return None
    n = 1
    while (out / f"previous-{n}").exists():
        n += 1
    keep = out / f"previous-{n}"
    keep.mkdir()
    for name in names:
        os.replace(out / name, keep / name)
    return keep


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint folder out of the way (it is no longer a candidate and is never overwritten)."""
    n, target = 1, folder.with_name(f"{folder.name}.damaged")
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.damaged-{n}")
    os.replace(folder, target)
    return target


def agree_across_ranks(procs: Procs, mine: tuple[Any, ...]) -> None:
    """Stop every rank with one error if any rank starts elsewhere or has different epochs or config."""
    views = procs.gather(mine)
    bad = [r for r, v in enumerate(views) if v != views[0]]
    if bad:
        fields = "(epoch, iteration, step, iterations per epoch, samples per epoch, config hash)"
        raise LiifError(f"ranks disagree on {fields}: rank 0 has {tuple(views[0])}, rank {bad[0]} has "
                        f"{tuple(views[bad[0]])}; every node must run the same config on the same data")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows past ``step`` (written after the checkpoint a resumed run starts from).

    The dropped rows are appended to ``log.dropped.csv`` beside it: nothing of a run's history is lost."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(r["step"]) <= step]
    if len(keep) == len(rows):
        return
    dropped = path.with_name("log.dropped.csv")
    new = not dropped.exists()
    with open(dropped, "a", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerows(r for r in rows if int(r["step"]) > step)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        w.writerows(keep)
