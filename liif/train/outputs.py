"""What the run writes, decided once per rank: rank 0 alone logs and writes files (a ``MainOutput``: stderr,
the run folder and the progress bar); the other ranks get an ``Output`` that writes nothing, so the loop
calls the same methods on every rank without asking.

The run folder: config.yaml, log.csv (rows past a resumed checkpoint moved to log.dropped.csv), tb/,
checkpoints/ (damaged ones renamed aside on --resume) and, after --restart, previous-N/.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from liif.fileio import atomic_path
from liif.models import ImplicitDecoder
from liif.train import run_state as ckpt
from liif.train.config import Config, dump

CSV_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_s", "val_psnr"]


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
