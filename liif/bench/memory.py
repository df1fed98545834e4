"""Peak RSS of whole ``liif upscale`` processes (``liif bench infer --memory``): each run in a child of a
fresh interpreter, on a synthetic input written once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from liif.errors import LiifError


def peak_rss_of(cmd: list[str]) -> tuple[int, float]:
    """Run ``cmd`` in a child of a fresh interpreter and return (peak RSS bytes, seconds)."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); "
             "rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t, rc)")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    fields = res.stdout.strip().splitlines()[-1].split() if res.stdout.strip() else []
    if len(fields) != 3 or fields[2] != "0":
        raise LiifError(f"benchmark command failed: {' '.join(cmd)}: {res.stderr.strip()[-300:]}")
    return int(fields[0]) * 1024, float(fields[1])


def synthetic_input(folder: Path, wh: tuple[int, int]) -> Path:
    from liif.demo import test_card

    path = folder / f"input_{wh[0]}x{wh[1]}.png"
    if not path.exists():
        test_card(512).resize(wh, Image.Resampling.BICUBIC).save(path)
    return path


def upscale_peak_rss(weights_file: Path, folder: Path, huge: bool, precs: list[str]) -> list[dict[str, Any]]:
    """Peak RSS and seconds of ``liif upscale`` 960x540 -> 3840x2160: fast in each of ``precs`` on the CPU,
    and the reference on a 3840x64 window; with ``huge`` also 4608x3456 -> 9216x6912 (upstream issue #44),
    fast fp32 with ``--max-memory 1G``."""
    liif = [sys.executable, "-m", "liif.cli"]
    src = synthetic_input(folder, (960, 540))
    runs = [
        *((f"fast {p}", ["--size", "3840x2160", "--precision", p, "--device", "cpu"]) for p in precs),
        ("reference, 3840x64 window (the whole unfolded map is built for any window)",
         ["--size", "3840x2160", "--method", "reference", "--region", "0,0,3840,64"]),
    ]
    rows = []
    for label, extra in runs:
        rss, secs = peak_rss_of([*liif, "upscale", str(src), "-o", str(folder / "out.png"), "--weights",
                                 str(weights_file), "--no-progress", *extra])
        rows.append({"case": f"960x540 -> 3840x2160, {label}", "peak_rss_gb": rss / 1e9, "seconds": secs})
        print(f"960x540 -> 3840x2160, {label}: peak RSS {rss / 1e9:.2f} GB ({secs:.0f} s)", flush=True)
    if huge:
        big = synthetic_input(folder, (4608, 3456))
        rss, secs = peak_rss_of([*liif, "upscale", str(big), "-o", str(folder / "huge.png"), "--weights",
                                 str(weights_file), "--size", "9216x6912", "--max-memory", "1G", "--no-progress"])
        rows.append({"case": "4608x3456 -> 9216x6912 (upstream issue #44), fast fp32, --max-memory 1G",
                     "peak_rss_gb": rss / 1e9, "seconds": secs})
        print(f"4608x3456 -> 9216x6912, fast fp32, --max-memory 1G: peak RSS {rss / 1e9:.2f} GB ({secs:.0f} s)")
    return rows

