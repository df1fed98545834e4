#!/usr/bin/env python3
"""Resident memory per training rank: Rss, Pss and Uss (private) from /proc/PID/smaps_rollup.

    python3 scripts/train_memory.py CONFIG NPROC [liif train options, e.g. --set data.train.cache=mmap]

Starts ``dist_train.sh CONFIG NPROC`` into a temporary --out, waits until training has logged a few
rows, reads every worker's memory (its DataLoader worker processes added), prints one line per rank,
and stops the job. Linux only.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rollup(pid: int) -> dict[str, int]:
    """kB figures of one process."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0])
    return {"rss": out["Rss"], "pss": out["Pss"], "uss": out["Private_Clean"] + out["Private_Dirty"]}


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def main() -> int:
    config, nproc, *rest = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "run" / "log.csv"
        proc = subprocess.Popen(["bash", str(ROOT / "dist_train.sh"), config, nproc, "--out", str(Path(tmp) / "run"),
                                 "--no-progress", "--set", "log.every=1", *rest], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not (log.exists() and len(log.read_text().splitlines()) > 5):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"training ended or stalled before it logged (exit code {proc.poll()})")
                time.sleep(0.5)
            for worker in children(proc.pid):  # torchrun's agent -> one process per rank
                env = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
                rank = next(e.split(b"=")[1].decode() for e in env if e.startswith(b"RANK="))
                procs = [worker, *children(worker)]
                total = {k: sum(rollup(p)[k] for p in procs) for k in ("rss", "pss", "uss")}
                print(f"rank {rank} ({len(procs)} processes): Rss {total['rss'] / 1024:.0f} MiB, "
                      f"Pss {total['pss'] / 1024:.0f} MiB, Uss {total['uss'] / 1024:.0f} MiB")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
