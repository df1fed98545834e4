"""Training checkpoints: one folder per checkpoint, replaced as a whole.

A checkpoint folder (``last``, ``best``, ``epoch-N``) holds
  model.safetensors + model.json   the weights in our own format (``liif upscale --weights``)
  state.pt                          optimizer, scheduler, grad scaler, RNG, counters, resolved config
It is written into a hidden ``.NAME.new`` folder first; then the old folder is moved aside to
``.NAME.old``, the new one renamed into place, and the old one deleted. A kill at any moment leaves
either ``NAME`` or ``.NAME.old`` complete, and ``find`` returns whichever is.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from liif import checkpoints
from liif.errors import LiifError
from liif.models import LIIF, ModelSpec

WEIGHTS = "model.safetensors"
STATE = "state.pt"


def save(folder: Path, model: LIIF, spec: ModelSpec, state: dict[str, Any]) -> Path:
    folder = Path(folder)
    new = folder.parent / f".{folder.name}.new"
    old = folder.parent / f".{folder.name}.old"
    shutil.rmtree(new, ignore_errors=True)
    checkpoints.save(model, spec, new / WEIGHTS)
    with checkpoints.atomic_path(new / STATE) as tmp:
        torch.save(state, tmp)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (WEIGHTS, "model.json", STATE))


def find(folder: Path) -> Path | None:
    """The usable checkpoint for ``folder``: itself, or the previous one if a swap was interrupted."""
    folder = Path(folder)
    for cand in (folder, folder.parent / f".{folder.name}.old"):
        if cand.is_dir() and complete(cand):
            return cand
    return None


def load(folder: Path, model: LIIF) -> dict[str, Any]:
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
