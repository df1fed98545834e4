"""Start or resume: which checkpoint every rank continues from (one decision for all ranks), and loading it.

``--resume`` continues from the newest complete checkpoint of any rank's --out; ``--restart`` starts over
after moving the previous run's files aside; without either, a folder that holds a run is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from liif.errors import LiifError
from liif.models import ImplicitDecoder
from liif.train import run_state as ckpt
from liif.train.config import Config
from liif.train.outputs import Output
from liif.train.processes import Procs
from liif.train.run import Optimization, Run


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


def load_checkpoint(found: Found, cfg: Config, model: ImplicitDecoder, optim: Optimization, run: Run) -> list[str]:
    """Weights, optimizer, schedule, scaler and counters from ``found``, whose model must be the configured one.
    Returns the settings that differ from the run's saved config (``config_changes``): they apply from
    here on, the learning-rate schedule included (``Optimization.follow``).

    Checkpoints written before this version also hold ``rng`` (the torch RNG state); it is ignored, as it
    always was in effect: the model's RNG stream is re-seeded from the step after resuming."""
    state = found.state
    now = cfg.to_dict()
    if state["config"]["model"] != now["model"]:
        raise LiifError(f"--resume: the model section differs from the checkpoint's ({found.path})")
    try:
        model.load_state_dict(found.weights, strict=True)
    except RuntimeError as e:
        raise LiifError(f"checkpoint {found.path} does not fit the configured model: "
                        f"{str(e).splitlines()[0]}") from None
    optim.load_state_dict(state)
    changed = config_changes(state["config"], now)
    if any(c.split(" ", 1)[0] in ("train.lr", "train.milestones", "train.gamma") for c in changed):
        optim.follow(cfg.train)  # unchanged, the loaded schedule goes on bit for bit
    run.epoch, run.it, run.step, run.best = state["epoch"], state["iter"], state["step"], state["best_psnr"]
    run.train_s = float(state.get("train_s", 0.0))  # absent in checkpoints written before budget mode
    run.saved = f"{found.path} (step {run.step})"
    return changed


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``KEY OLD -> NEW`` for each setting (dotted key, in config order) whose value differs between a run's
    saved config and this one; the model section is compared apart, as a whole."""
    old = _flatten({k: v for k, v in saved.items() if k != "model"})
    new = _flatten({k: v for k, v in now.items() if k != "model"})
    keys = [*new, *(k for k in old if k not in new)]
    return [f"{k} {_short(old.get(k, '(absent)'))} -> {_short(new.get(k, '(absent)'))}"
            for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


_ABSENT = object()


def _flatten(tree: dict[str, Any], where: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{where}.{k}" if where else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def epoch_and_iteration(epochs_done: int, iters_done: int, iters: int) -> tuple[int, int]:
    """(epoch, iteration) of the last step done, both from 1 as in log.csv; (0, 0) before the first step.

    The loop counts completed epochs and iterations done in the next one; a finished epoch is
    reported as its own last iteration, so the summary, the CSV and the resume message agree."""
    if iters_done:
        return epochs_done + 1, iters_done
    return (epochs_done, iters) if epochs_done else (0, 0)


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
