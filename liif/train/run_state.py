"""The state of a training run, saved so the run can resume: one folder per checkpoint, replaced
as a whole. (Model checkpoint files on their own, in the official, OpenMMLab and our formats, are
:mod:`liif.checkpoints`.)

A checkpoint folder (``last``, ``best``, ``epoch-N``) holds
  model.safetensors + model.json   the weights in our own format (``liif upscale --weights``)
  state.pt                          optimizer, scheduler, grad scaler, counters, resolved config
It is written into a hidden ``.NAME.new`` folder first; then the old folder is moved aside to
``.NAME.old``, the new one renamed into place, and the old one deleted. A kill at any moment leaves
either ``NAME`` or ``.NAME.old`` complete, and ``find`` returns whichever is.

``newest`` looks at every checkpoint of a run (``last``, ``epoch-N`` and their ``.old`` copies) and
returns the complete, readable one with the most steps: a damaged ``last`` falls back to the newest
``epoch-N`` instead of starting the run over.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from liif import checkpoints
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.models import ImplicitDecoder, ModelSpec

WEIGHTS = "model.safetensors"
STATE = "state.pt"


def save(folder: Path, model: ImplicitDecoder, spec: ModelSpec, state: dict[str, Any]) -> Path:
    """Write checkpoint ``folder`` through ``.NAME.new`` (see the module's text). A write that fails (disk
    full, permissions) is a one-line LiifError; the partial ``.NAME.new`` is removed and the previous
    checkpoint stays in place."""
    folder = Path(folder)
    new = folder.parent / f".{folder.name}.new"
    old = folder.parent / f".{folder.name}.old"
    try:
        shutil.rmtree(new, ignore_errors=True)
        checkpoints.save(model, spec, new / WEIGHTS)
        with atomic_path(new / STATE) as tmp:
            torch.save(state, tmp)
    except BaseException as e:
        free = _free(folder.parent)  # before the cleanup gives the partial files' space back
        shutil.rmtree(new, ignore_errors=True)  # also on Ctrl-C: no partial folder is left behind
        # A full disk is an OSError from Python's writes, a RuntimeError from torch.save's zip writer ("unexpected
        # pos ...") and a SafetensorError from safetensors; anything else (a bug, an interrupt) goes on as raised.
        if not isinstance(e, (OSError, RuntimeError)) and type(e).__name__ != "SafetensorError":
            raise
        if isinstance(e, OSError) and e.strerror:
            why = e.strerror
        else:  # torch's message does not say why: the free space does
            why = f"{(str(e).strip().splitlines() or [type(e).__name__])[0][:200]} ({free} free on its disk)"
        kept = f"; the previous {folder.name} is kept" if find(folder) is not None else ""
        raise LiifError(f"cannot save checkpoint {folder}: {why}{kept}") from None
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _free(folder: Path) -> str:
    """The free space of ``folder``'s disk, e.g. ``8 KiB`` (``unknown`` if it cannot be read)."""
    try:
        n = float(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return "unknown"


def complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (WEIGHTS, "model.json", STATE))


def find(folder: Path) -> Path | None:
    """The usable checkpoint for ``folder``: itself, or the previous one if a swap was interrupted."""
    folder = Path(folder)
    for cand in (folder, folder.parent / f".{folder.name}.old"):
        if cand.is_dir() and complete(cand):
            return cand
    return None


RESUMABLE = re.compile(r"\.?(last|epoch-\d+)(\.old)?")


def step_of(folder: Path) -> int | None:
    """The step count saved in ``folder``, or None if the checkpoint is incomplete or unreadable.

    ``mmap`` reads the counters without loading the optimizer tensors."""
    if not complete(folder):
        return None
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True, mmap=True)
        return int(state["step"])
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not a candidate
        return None


def newest(root: Path) -> tuple[Path | None, list[Path]]:
    """(the complete checkpoint with the most steps under ``root`` or None, the damaged ones seen).

    Candidates are ``last``, ``epoch-N`` and the ``.NAME.old`` copy an interrupted swap leaves;
    on equal steps ``last`` wins. ``best`` is not a candidate (it is not the newest state)."""
    root = Path(root)
    best: tuple[int, int, Path] | None = None
    damaged = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or not RESUMABLE.fullmatch(folder.name):
            continue
        step = step_of(folder)
        if step is None:
            if not folder.name.startswith("."):  # .NAME.new / .NAME.old debris is not a checkpoint
                damaged.append(folder)
            continue
        key = (step, folder.name == "last", folder)
        if best is None or key[:2] > best[:2]:
            best = key
    return (best[2] if best else None), damaged


def read(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, training state) of checkpoint ``folder``; one-line errors."""
    _, sd = checkpoints.read(folder / WEIGHTS)
    try:
        return sd, torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise LiifError(f"cannot read {folder / STATE}: {type(e).__name__}: {e}") from None


def load(folder: Path, model: ImplicitDecoder) -> dict[str, Any]:
    """Load the weights of checkpoint ``folder`` into ``model``; return its training state."""
    spec, sd = checkpoints.read(folder / WEIGHTS)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise LiifError(f"checkpoint {folder} does not fit the configured model: {str(e).splitlines()[0]}") from None
    try:
        return torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise LiifError(f"cannot read {folder / STATE}: {type(e).__name__}: {e}") from None
