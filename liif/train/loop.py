"""The training loop: one process or many (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK).

``_train`` reads top to bottom: setup (device, process group, model and optimizer, data, start or
resume), then per epoch its batches (``train_epoch``: ``train_step``, a log row every ``log.every``
steps, 'last' refreshed by time or iteration count) and ``end_of_epoch`` (MultiStepLR step,
validation with the paper's PSNR protocol, checkpoints). In budget mode (``train.budget_minutes``) the
epochs go on until the training clock reaches the budget, the learning rate follows the clock's fraction
of the budget (milestone / epochs) instead of the epoch count, and ``end_of_budget`` closes the run.

Decided once, at setup, not at every use: the compute settings (``Compute``: device, the precision that
runs, its autocast), one process or several (``Procs`` or ``Group``, in ``processes``), and rank 0 or
not (rank 0 alone logs, validates and writes files: it gets a ``MainOutput`` and the validation set, the
other ranks an ``Output`` that writes nothing; ``outputs``). The step and validation are in ``step``,
the data in ``datasets``, the run's state in ``run``, the choice of where to start in ``resume``.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from liif import compute
from liif.compute import Compute, set_tf32
from liif.errors import LiifError
from liif.models import build
from liif.train.checks import check_folder, check_model_size
from liif.train.config import Config, Optim, dump
from liif.train.datasets import batches, build_data, epoch_batches
from liif.train.init import load_init
from liif.train.outputs import MainOutput, Output
from liif.train.processes import Procs, agree_across_ranks, pick_device, processes
from liif.train.resume import choose_checkpoint, epoch_and_iteration, load_checkpoint
from liif.train.run import Optimization, Run, Setup, Window, checkpoint_state
from liif.train.step import Step, probe, train_step, validate

FP16_SKIPS = 20  # consecutive non-finite fp16 steps (each skipped by the scaler) that stop a run

def train(cfg: Config, out: Path, resume: bool = False, max_minutes: float | None = None,
          progress: bool | None = None, restart: bool = False, dist_timeout_s: float = 1800.0) -> dict[str, Any]:
    """Train per ``cfg`` into ``out``; returns a summary (steps, epoch, last loss, samples/s, best PSNR).

    Under torchrun a failed or timed-out collective (a rank died, hung or took another path) ends
    every rank with a one-line error naming the rank and the step, instead of a hang. A loss that becomes
    non-finite stops the run with a one-line error; no checkpoint ever holds non-finite weights."""
    check_folder(Path(out), "--out")  # before anything: a file, /proc/x, a read-only folder
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
    check_model_size(spec)  # on the meta device, before allocating
    model = build(spec).to(device)
    settings = Compute.resolve(device, t.precision)  # auto: what this hardware runs natively
    step = Step(model, t.fold, t.channels_last)
    probe(step, device)  # a model the config describes but that cannot run fails here, before any file
    optim = Optimization.create(model, t, settings)
    if device.type == "cuda":  # fp32 is full fp32 (cuDNN would use TF32 for convolutions by default)
        set_tf32(settings.tf32)
    cpu = f", {compute.cpu_info().describe()}" if device.type == "cpu" else ""
    output.say(f"training on {device} with {procs.world} process(es), precision {settings.precision} "
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
    if found is None and t.init is not None:  # a fresh run that fine-tunes: every rank loads the same file
        output.say(f"starting from the weights {load_init(model, spec, t.init)} (train.init: {t.init})")
    if found is not None:
        changed = load_checkpoint(found, cfg, model, optim, run)
        output.set_aside(found.damaged)
        e, i = epoch_and_iteration(run.epoch, run.it, iters)
        output.say(f"resumed from {found.path} after step {run.step} (epoch {e}, iteration {i} of {iters})")
        if changed:
            output.say(f"--resume: the config differs from the run's saved one in {'; '.join(changed)}; "
                       f"the new values apply from step {run.step + 1} (only the model section must not change)")
    # Every rank must start at the same place with the same epochs, or their collectives pair up wrongly.
    run.doing = "checking that all ranks agree"
    agree_across_ranks(procs, (run.epoch, run.it, run.step, iters, len(train_set),
                               hashlib.sha256(dump(cfg).encode()).hexdigest()[:12]))
    torch.manual_seed(t.seed * 1000 + procs.rank + run.step)  # per-rank stream for anything random in the model
    forward = procs.wrap(step, device)
    s = Setup(cfg, out, procs, output, model, torch.compile(forward) if t.compile else forward, optim, settings,
              train_set, val_set, iters,
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
    try:
        while (s.budget_s or run.epoch < t.epochs) and not run.stopped:
            row = train_epoch(s, run)
            if row is None:  # --max-minutes or the budget stopped the run mid-epoch ('last' holds where)
                break
            end_of_epoch(s, run, row)
        if run.budget_spent and run.final_row:
            end_of_budget(s, run)
    finally:
        output.close()  # the progress bar ends before the error line
    run.doing = "finishing"
    procs.barrier()
    return summary(run, iters, settings.precision, out / "checkpoints" / "last")


def train_epoch(s: Setup, run: Run) -> dict[str, Any] | None:
    """Epoch ``run.epoch`` from iteration ``run.it`` on. Returns its last log row (``end_of_epoch`` adds the
    PSNR and writes it), or None when --max-minutes stopped the run mid-epoch (after saving 'last') or the
    budget (train.budget_minutes) is spent (``end_of_budget`` then validates and saves)."""
    cfg = s.cfg
    loader = epoch_loader(s, run)
    row: dict[str, Any] = {"step": run.step, "epoch": run.epoch + 1, "lr": s.optim.lr}
    run.doing = f"training epoch {run.epoch + 1}"
    for batch in batches(loader):
        loss = train_step(s.forward, s.model, s.optim.opt, s.optim.scaler, batch, s.settings)
        run.count(loss)
        epoch_done = run.it == s.iters
        s.output.stepped()
        now = time.monotonic()
        run.stopped, save_by_time, spent, drops, diverged = decide(s, run, now, loss)
        # A non-finite loss (this rank's or another's) stops every rank at this step; under fp16 the
        # gradient scaler skips such a step and lowers its scale, so only a run of them stops training.
        run.nonfinite = run.nonfinite + 1 if diverged else 0
        if diverged and (not s.optim.scaler.is_enabled() or run.nonfinite >= FP16_SKIPS):
            where = f"{loss}" if not math.isfinite(loss) else "non-finite on another rank"
            streak = f" ({run.nonfinite} steps in a row)" if run.nonfinite > 1 else ""
            raise stop_diverged(s, run, f"the loss became {where}{streak}")
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
            save(s, run, ["last"])
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
    check_weights(s, run)  # before validating: non-finite weights would score a NaN PSNR
    if s.val_set is not None and validate_now:
        row["val_psnr"] = f"{validate(s.model, s.val_set, s.cfg.data.val.y_channel, s.settings.device):.4f}"
        if float(row["val_psnr"]) > run.best:
            names = [*names, "best"]
        run.best = max(run.best, float(row["val_psnr"]))
        s.output.note(f"{when}: val PSNR {row['val_psnr']} dB")
    s.output.log(row)
    save(s, run, names)
    s.procs.barrier()


def save(s: Setup, run: Run, names: list[str]) -> None:
    """Rank 0 saves the checkpoints ``names`` of the current weights, which every rank first checks are finite."""
    check_weights(s, run)
    s.output.save(names, s.model, checkpoint_state(s, run))
    run.last_saved = time.monotonic()
    run.saved = f"{s.out / 'checkpoints' / 'last'} (step {run.step})"


def check_weights(s: Setup, run: Run) -> None:
    """Stop the run, on every rank alike (DDP keeps their weights equal), if a weight is NaN or infinite:
    such weights are never saved, so 'last' keeps the previous, finite ones."""
    params = [p.detach() for p in s.model.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise stop_diverged(s, run, "the weights became non-finite")


def stop_diverged(s: Setup, run: Run, what: str) -> LiifError:
    """The one-line error of a run that diverged at step ``run.step``, naming the checkpoint it keeps."""
    e, i = epoch_and_iteration(run.epoch, run.it, s.iters)
    kept = (f"the last checkpoint, {run.saved}, holds finite weights (nothing later was saved)" if run.saved
            else "no checkpoint had been saved yet")
    return LiifError(f"{what} at step {run.step} (epoch {e}, iteration {i}): training stopped; {kept}; "
                     f"lower train.lr or check the data and the model's normalisation")


def epoch_loader(s: Setup, run: Run) -> torch.utils.data.DataLoader:
    """This rank's batches of epoch ``run.epoch``, from iteration ``run.it`` on."""
    t = s.cfg.train
    s.train_set.set_epoch(run.epoch)
    batches = epoch_batches(len(s.train_set), t.batch_size, run.epoch, t.seed, s.procs.rank, s.procs.world)
    return torch.utils.data.DataLoader(s.train_set, batch_sampler=batches[run.it:], num_workers=s.cfg.data.workers,
                                       pin_memory=s.settings.device.type == "cuda")


def decide(s: Setup, run: Run, now: float, loss: float) -> tuple[bool, bool, bool, int, bool]:
    """(stop now, refresh 'last' now, budget spent, learning-rate drops so far in budget mode, a rank's loss
    is not finite), the same on every rank, in one collective. The first four are decided by rank 0's
    clock: the ranks' clocks differ, and every rank must take the same path and the same learning rate
    (or their collectives pair up wrongly and their weights drift apart); the last by any rank."""
    frac = (now - run.clock) / s.budget_s if s.budget_s else 0.0
    mine = [s.deadline is not None and now >= s.deadline, 0 < s.cfg.checkpoint.last_every_s <= now - run.last_saved,
            frac >= 1.0, budget_drops(s.cfg.train, frac)] if s.procs.main else [0, 0, 0, 0]
    flags = s.procs.all_sum(torch.tensor([*mine, not math.isfinite(loss)], dtype=torch.int32))
    return bool(flags[0]), bool(flags[1]), bool(flags[2]), int(flags[3]), bool(flags[4])


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



def _finite(x: float) -> float | None:
    """JSON has no NaN or Infinity: a value that does not exist yet is null."""
    return x if math.isfinite(x) else None
