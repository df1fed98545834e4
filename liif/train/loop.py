"""The training loop: one process or many (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK).

Read top to bottom: setup (process group, device, seeds), model and optimizer, data, resume,
then epochs of iterations: forward (layer-0 folded query, optional autocast), L1 loss in the
normalised space, backward (DDP averages gradients), Adam step; per epoch the MultiStepLR step,
validation (paper protocol PSNR) and checkpoints. Rank 0 alone logs and writes files.
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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from liif import precision as precisions
from liif.data.folders import ImageFolder, PairedFolders, div2k
from liif.data.sampling import FixedScale, ImplicitDownsampled
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.models import LIIF, build
from liif.models.folded import folded_forward
from liif.render import fp32_modes, set_fp32_modes
from liif.train import run_state as ckpt
from liif.train.config import Config, dump

CSV_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_s", "val_psnr"]


class Step(nn.Module):
    """The trained function as a module (so DDP can wrap it): normalised LR + queries -> prediction."""

    def __init__(self, model: LIIF, fold: bool, channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.fold, self.channels_last = model, fold, channels_last
        if channels_last:
            model.encoder.to(memory_format=torch.channels_last)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return folded_forward(self.model, inp, coord, cell) if self.fold else self.model(inp, coord, cell)


def train_step(forward: nn.Module, model: LIIF, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
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
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
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
    train = ImplicitDownsampled(images, d.inp_size, d.scale_min, d.scale_max, d.augment, d.sample_q, cfg.train.seed)
    v = cfg.data.val
    val = None
    if v.hr is not None:
        src: PairedFolders | ImageFolder = (PairedFolders(v.lr, v.hr, first_k=v.first_k) if v.lr is not None
                                            else ImageFolder(v.hr, first_k=v.first_k))
        val = FixedScale(src, v.scale)
    return train, val


@torch.no_grad()
def validate(model: LIIF, val: FixedScale, y_channel: bool, device: torch.device) -> float:
    """Mean PSNR over whole images rendered at the validation scale (Y + shave s, or RGB + shave s + 6)."""
    from liif.eval.metrics import psnr  # noqa: PLC0415 - written by the evaluation work
    from liif.render import render

    was_training = model.training
    model.eval()
    values = []
    for i in range(len(val)):
        lr, hr = val[i]
        pred = render(model, lr.to(device), tuple(hr.shape[-2:]))
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


def train(cfg: Config, out: Path, resume: bool = False, max_minutes: float | None = None,
          progress: bool | None = None, restart: bool = False, dist_timeout_s: float = 1800.0) -> dict[str, Any]:
    """Train per ``cfg`` into ``out``; returns a summary (steps, epoch, last loss, samples/s, best PSNR).

    Under torchrun a failed or timed-out collective (a rank died, hung or took another path) ends
    every rank with a one-line error naming the rank and the step, instead of a hang."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    where = {"step": 0, "doing": "setting up"}
    try:
        return _train(cfg, Path(out), resume, restart, max_minutes, progress, dist_timeout_s, where)
    except RuntimeError as e:  # torch.distributed's errors (DistBackendError, gloo/NCCL timeouts) derive from it
        if world == 1:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise LiifError(f"rank {rank} of {world}: {where['doing']} at step {where['step']} failed: {first} "
                        f"(another rank died, stalled or diverged; collectives time out after {dist_timeout_s:g} s, "
                        f"see --dist-timeout)") from None


def _train(cfg: Config, out: Path, resume: bool, restart: bool, max_minutes: float | None, progress: bool | None,
           dist_timeout_s: float, where: dict[str, Any]) -> dict[str, Any]:
    t_start = time.monotonic()
    # -- processes and device ------------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        init_process_group("nccl" if device.type == "cuda" else "gloo", rank, world, dist_timeout_s)
    master = rank == 0
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.batch_size % world:
        raise LiifError(f"config key train.batch_size ({t.batch_size}) must be a multiple of the "
                        f"number of processes ({world})")
    last_dir = out / "checkpoints" / "last"

    # -- model, optimizer, schedule ------------------------------------------------------------
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    spec = cfg.model_spec()
    model = build(spec).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=t.milestones, gamma=t.gamma)
    precision = precisions.resolve(t.precision, device)  # auto: what this hardware runs natively
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    amp_dtype = None if precisions.dtype(precision) == torch.float32 else precisions.dtype(precision)
    if device.type == "cuda":  # fp32 is full fp32 (cuDNN would use TF32 for convolutions by default)
        mode = "tf32" if precision == "tf32" else "ieee"
        set_fp32_modes((mode, mode) if isinstance(fp32_modes()[0], str) else (mode == "tf32",) * 2)
    if master:
        cpu = f", {precisions.cpu_info().describe()}" if device.type == "cpu" else ""
        print(f"training on {device} with {world} process(es), precision {precision} "
              f"(asked {t.precision}){cpu}", file=sys.stderr)

    # -- data ------------------------------------------------------------------------------------
    train_set, val_set = build_data(cfg, out)
    iters = len(train_set) // t.batch_size
    if iters == 0:
        raise LiifError(f"the training set has {len(train_set)} samples per epoch, fewer than one batch "
                        f"({t.batch_size}); raise data.train.repeat")

    # -- start or resume: one decision and one state for all ranks -------------------------------------
    # Every rank looks into its own --out (a shared folder or one per node); all ranks see all findings
    # and take the same decision; the rank holding the newest complete checkpoint sends it to the others.
    # A torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) always resumes.
    where["doing"] = "choosing the checkpoint to resume from"
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume, restart = True, False
    views = [survey(out)]
    if world > 1:
        views = [None] * world
        dist.all_gather_object(views, survey(out))
    source = start_from(views, out, resume, restart)
    if master and restart:
        moved = move_aside(out)
        if moved:
            print(f"--restart: the previous run's files are kept in {moved}", file=sys.stderr)
    epoch, it0, step, best = 0, 0, 0, -math.inf
    if source is not None:
        where["doing"] = f"receiving the checkpoint from rank {source}"
        payload: list[Any] = [None]
        if rank == source:
            found = Path(views[source]["found"])
            try:
                weights, state = ckpt.read(found)
                payload = [{"found": str(found), "weights": weights, "state": state}]
            except LiifError as e:
                payload = [{"error": str(e)}]
        if world > 1:
            dist.broadcast_object_list(payload, src=source)
        got = payload[0]
        if "error" in got:
            raise LiifError(got["error"])
        state = got["state"]
        if state["config"]["model"] != cfg.to_dict()["model"]:
            raise LiifError(f"--resume: the model section differs from the checkpoint's ({got['found']})")
        try:
            model.load_state_dict(got["weights"], strict=True)
        except RuntimeError as e:
            raise LiifError(f"checkpoint {got['found']} does not fit the configured model: "
                            f"{str(e).splitlines()[0]}") from None
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, it0, step, best = state["epoch"], state["iter"], state["step"], state["best_psnr"]
        torch.set_rng_state(state["rng"]["torch"])
        if master:
            for folder in views[0]["damaged"]:
                print(f"--resume: {folder} is incomplete or unreadable; kept as {set_aside(Path(folder))}",
                      file=sys.stderr)
            e, i = epoch_and_iteration(epoch, it0, iters)
            print(f"resumed from {got['found']} after step {step} (epoch {e}, iteration {i} of {iters})",
                  file=sys.stderr)
    elif resume and master:
        print(f"--resume: {out} holds no earlier run, starting from scratch", file=sys.stderr)
    # Every rank must start at the same place with the same epochs, or their collectives pair up wrongly.
    where["doing"] = "checking that all ranks agree"
    agree_across_ranks(world, (epoch, it0, step, iters, len(train_set),
                               hashlib.sha256(dump(cfg).encode()).hexdigest()[:12]))
    torch.manual_seed(t.seed * 1000 + rank + step)  # per-rank stream for anything random in the model

    step_module: nn.Module = Step(model, t.fold, t.channels_last)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[local_rank] if device.type == "cuda" else None)
    forward = torch.compile(step_module) if t.compile else step_module

    # -- logging ------------------------------------------------------------------------------------
    log_rows = out / "log.csv"
    writer = None
    if master:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(dump(cfg))
        _truncate_log(log_rows, step)
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out / "tb"))
    bar = None
    if master and (sys.stderr.isatty() if progress is None else progress):
        from tqdm import tqdm
        bar = tqdm(total=t.epochs * iters, initial=epoch * iters + it0, unit="it", dynamic_ncols=True)

    def state_dict(next_epoch: int, next_iter: int) -> dict[str, Any]:
        return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "epoch": next_epoch, "iter": next_iter, "step": step, "best_psnr": best,
                "rng": {"torch": torch.get_rng_state()}, "config": cfg.to_dict(), "precision": precision}

    def log(row: dict[str, Any]) -> None:
        new = not log_rows.exists()
        with open(log_rows, "a", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in CSV_FIELDS})
        if writer is not None:
            for k in ("loss", "lr", "samples_per_s", "val_psnr"):
                if row.get(k, "") != "":
                    writer.add_scalar(k, row[k], row["step"])

    # -- epochs ---------------------------------------------------------------------------------------
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    last_saved = time.monotonic()
    stopped = False
    stopped_at = 0  # iterations done in the epoch the time limit interrupted
    last_loss = math.nan
    window_loss, window_n, window_t = 0.0, 0, time.monotonic()
    sps = math.nan
    model.train()
    while epoch < t.epochs and not stopped:
        train_set.set_epoch(epoch)
        batches = epoch_batches(len(train_set), t.batch_size, epoch, t.seed, rank, world)[it0:]
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, num_workers=cfg.data.workers,
                                             pin_memory=device.type == "cuda")
        row: dict[str, Any] = {"step": step, "epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        where["doing"] = f"training epoch {epoch + 1}"
        for it, batch in enumerate(loader, start=it0):
            loss = train_step(forward, model, opt, scaler, batch, device, amp_dtype)
            step += 1
            where["step"] = step
            window_loss += loss
            window_n += 1
            done_iter = it + 1
            end_of_epoch = done_iter == iters
            if bar is not None:
                bar.update(1)
            # Rank 0's clock decides, for every rank, whether to stop and whether to refresh 'last' now.
            now = time.monotonic()
            flags = torch.tensor([deadline is not None and now >= deadline,
                                  0 < cfg.checkpoint.last_every_s <= now - last_saved], dtype=torch.int32)
            if world > 1:
                dist.broadcast(flags, 0)
            stopped, save_by_time = bool(flags[0]), bool(flags[1])
            if step % cfg.log.every == 0 or end_of_epoch or stopped:
                stats = torch.tensor([window_loss, window_n], dtype=torch.float64)
                if world > 1:
                    dist.all_reduce(stats)
                sps = window_n / world * t.batch_size / (now - window_t)
                last_loss = float(stats[0] / stats[1])
                row = {"step": step, "epoch": epoch + 1, "loss": f"{last_loss:.6f}",
                       "lr": opt.param_groups[0]["lr"], "samples_per_s": f"{sps:.2f}"}
                if master and not end_of_epoch:  # the epoch's last row waits for the validation PSNR
                    log(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{last_loss:.4f}", sps=f"{sps:.1f}")
                window_loss, window_n, window_t = 0.0, 0, now
            if end_of_epoch:
                break
            every = cfg.checkpoint.last_every_iters
            if stopped or save_by_time or (every and step % every == 0):
                if master:
                    ckpt.save(last_dir, model, spec, state_dict(epoch, done_iter))
                last_saved = time.monotonic()
            if stopped:
                stopped_at = done_iter
                break
        if stopped_at:
            break
        # -- end of epoch: schedule, validation, checkpoints --------------------------------------
        where["doing"] = f"ending epoch {epoch + 1} (rank 0 validates and saves)"
        it0 = 0
        sched.step()
        epoch += 1
        if master:
            is_best = False
            if val_set is not None and (epoch % cfg.data.val.every == 0 or epoch == t.epochs):
                row["val_psnr"] = f"{validate(model, val_set, cfg.data.val.y_channel, device):.4f}"
                is_best = float(row["val_psnr"]) > best
                best = max(best, float(row["val_psnr"]))
                if bar is not None:
                    bar.write(f"epoch {epoch}: val PSNR {row['val_psnr']} dB")
            log(row)
            st = state_dict(epoch, 0)
            ckpt.save(last_dir, model, spec, st)
            if is_best:
                ckpt.save(out / "checkpoints" / "best", model, spec, st)
            if epoch % cfg.checkpoint.save_every == 0:
                ckpt.save(out / "checkpoints" / f"epoch-{epoch}", model, spec, st)
        last_saved = time.monotonic()
        if world > 1:
            dist.barrier()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    where["doing"] = "finishing"
    if world > 1:
        dist.barrier()
    e, i = epoch_and_iteration(epoch, stopped_at, iters)
    return {"step": step, "epoch": e, "iteration": i, "iterations_per_epoch": iters, "precision": precision,
            "loss": _finite(last_loss), "samples_per_s": _finite(sps), "best_psnr": _finite(best),
            "stopped_early": stopped, "checkpoint": str(last_dir)}


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


def agree_across_ranks(world: int, mine: tuple[Any, ...]) -> None:
    """Stop every rank with one error if any rank starts elsewhere or has different epochs or config."""
    if world == 1:
        return
    views: list[Any] = [None] * world
    dist.all_gather_object(views, mine)
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
