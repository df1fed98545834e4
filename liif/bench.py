"""``liif bench infer``: reference vs fast fp32 vs fast bf16 rendering, measured in one run.

Absolute times on shared machines mean little, so the figures that matter are ratios measured
side by side in the same process, plus the fraction of this machine's matmul peak (measured
here too) that each path reaches, and peak RSS of whole ``liif upscale`` processes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from liif import checkpoints, weights
from liif.checkpoints import atomic_path
from liif.errors import LiifError
from liif.models import LIIF
from liif.render import Window, render, window_region

def macs_per_pixel(model: LIIF, folded: bool) -> int:
    """Multiply-adds per output pixel of the decoder (4 ensemble codes): 1.38 M official, 0.79 M folded."""
    assert model.imnet is not None
    linears = [m for m in model.imnet.layers if isinstance(m, torch.nn.Linear)]
    per_code = sum(m.in_features * m.out_features for m in linears)
    if folded:  # layer 0 becomes a gather plus the 2-wide offset term
        per_code -= linears[0].in_features * linears[0].out_features - 2 * linears[0].out_features
    return per_code * (4 if model.local_ensemble else 1)


def encoder_macs_per_pixel(model: LIIF) -> int:
    """Multiply-adds per LR pixel of the convolutions the encoder actually runs (counted with hooks
    on a small input, so unused modules do not count)."""
    total = 0

    def count(m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, torch.nn.Conv2d)
        k = m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        total += k * out.shape[-2] * out.shape[-1]

    hooks = [m.register_forward_hook(count) for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.encoder(torch.zeros(1, 3, 8, 8, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return total // 64


def fast_macs(model: LIIF, lr_hw: tuple[int, int], out_hw: tuple[int, int], win: Window) -> int:
    """All multiply-adds of a one-tile fast render of ``win``: encoder and layer-0 conv on the LR box
    the window needs (plus the encoder's halo), and the folded decoder on every window pixel."""
    y0, y1, x0, x1 = window_region(model, lr_hw, out_hw, win)
    per_lr_px = encoder_macs_per_pixel(model)
    assert model.imnet is not None
    first = model.imnet.layers[0]
    n_feat = first.in_features - 2 - (2 if model.cell_decode else 0)  # minus the offset (and cell) inputs
    per_lr_px += n_feat * first.out_features  # layer 0 as a conv on the (3x3-unfolded) features
    return (y1 - y0) * (x1 - x0) * per_lr_px + win.h * win.w * macs_per_pixel(model, folded=True)


def matmul_peak(dtype: torch.dtype, windows: int = 8, seconds: float = 0.25) -> float:
    """GFLOP/s of a (4096 x 256) @ (256 x 256) GEMM, the decoder's shape: the best of several short
    windows, since one long window on a shared machine under-reads the peak."""
    a = torch.randn(4096, 256).to(dtype)
    b = torch.randn(256, 256).to(dtype)
    for _ in range(5):
        torch.mm(a, b)
    best = 0.0
    for _ in range(windows):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            torch.mm(a, b)
            n += 1
        best = max(best, 2 * 4096 * 256 * 256 * n / (time.perf_counter() - t0) / 1e9)
    return best


def centred_window(out_hw: tuple[int, int], max_px: int) -> Window:
    h, w = out_hw
    side = int(max_px ** 0.5)
    wh, ww = min(h, side), min(w, side)
    return Window((h - wh) // 2, (w - ww) // 2, wh, ww)


def timed_interleaved(fns: dict[str, Any], repeat: int) -> dict[str, tuple[float, torch.Tensor]]:
    """Best-of-``repeat`` time of each function, run in turn (a, b, c, a, b, c, ...) so that a slow
    spell of a shared machine hits every path alike instead of one of them."""
    best: dict[str, tuple[float, torch.Tensor]] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            if name not in best or dt < best[name][0]:
                best[name] = (dt, out)
    return best


def throughput(model: LIIF, img: torch.Tensor, scales: list[float], max_px: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"measured matmul peak (4096x256 @ 256x256): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    for s in scales:
        out_hw = (round(img.shape[1] * s), round(img.shape[2] * s))
        win = centred_window(out_hw, max_px)
        px = win.h * win.w
        with torch.no_grad():
            res = timed_interleaved({
                "reference": lambda: render(model, img, out_hw, win, method="reference"),
                "fp32": lambda: render(model, img, out_hw, win, precision="fp32"),
                "bf16": lambda: render(model, img, out_hw, win, precision="bf16"),
            }, repeat)
        (t_ref, ref), (t_f32, f32), (t_b16, b16) = res["reference"], res["fp32"], res["bf16"]
        row = {
            "scale": s, "output": f"{out_hw[1]}x{out_hw[0]}", "window_px": px,
            "reference_px_s": px / t_ref, "fast_fp32_px_s": px / t_f32, "fast_bf16_px_s": px / t_b16,
            "fp32_speedup": t_ref / t_f32, "bf16_speedup": t_ref / t_b16,
            "fp32_max_abs_diff": float((f32 - ref).abs().max()), "bf16_max_abs_diff": float((b16 - ref).abs().max()),
            "reference_peak_fraction": px / t_ref * macs_per_pixel(model, False) * 2 / 1e9 / peaks["fp32"],
            "fp32_peak_fraction": px / t_f32 * macs_per_pixel(model, True) * 2 / 1e9 / peaks["fp32"],
            "bf16_peak_fraction": px / t_b16 * macs_per_pixel(model, True) * 2 / 1e9 / peaks["bf16"],
        }
        # The speed-up the fast path would show if all its work (encoder included) ran at the peak.
        work = 2 * fast_macs(model, tuple(img.shape[-2:]), out_hw, win) / 1e9
        row["fp32_speedup_bound"] = t_ref / (work / peaks["fp32"])
        row["bf16_speedup_bound"] = t_ref / (work / peaks["bf16"])
        rows.append(row)
        print(f"x{s:g} ({row['output']}, window {win.w}x{win.h}): reference {row['reference_px_s']:,.0f} px/s | "
              f"fast fp32 {row['fast_fp32_px_s']:,.0f} px/s = {row['fp32_speedup']:.2f}x, max|diff| "
              f"{row['fp32_max_abs_diff']:.1e} | fast bf16 {row['fast_bf16_px_s']:,.0f} px/s = "
              f"{row['bf16_speedup']:.2f}x, max|diff| {row['bf16_max_abs_diff']:.1e} | fraction of matmul peak: "
              f"reference {row['reference_peak_fraction']:.0%}, fp32 {row['fp32_peak_fraction']:.0%}, "
              f"bf16 {row['bf16_peak_fraction']:.0%} | bound at peak (all work, encoder included): "
              f"fp32 {row['fp32_speedup_bound']:.2f}x, bf16 {row['bf16_speedup_bound']:.2f}x", flush=True)
    return rows


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


def memory(weights_file: Path, folder: Path, huge: bool) -> list[dict[str, Any]]:
    liif = [sys.executable, "-m", "liif.cli"]
    src = synthetic_input(folder, (960, 540))
    runs = [
        ("fast fp32", ["--size", "3840x2160"]),
        ("fast bf16", ["--size", "3840x2160", "--precision", "bf16"]),
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


def main(args: argparse.Namespace) -> int:
    if args.what == "train":
        from liif.train import bench as train_bench

        return int(train_bench.main(args))
    wfile = weights.path(args.weights)
    model, _ = checkpoints.load(wfile)
    from liif.demo import test_card

    card = np.array(test_card(args.size))
    img = torch.from_numpy(card).permute(2, 0, 1).float() / 255
    scales = [float(s) for s in args.scales.split(",")]
    print(f"liif bench infer: {args.size}x{args.size} input, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    report: dict[str, Any] = {"throughput": throughput(model, img, scales, args.max_window_px, args.repeat)}
    if not args.skip_memory:
        with tempfile.TemporaryDirectory(prefix="liif-bench-") as tmp:
            report["memory"] = memory(wfile, Path(tmp), args.huge)
    if args.json:
        with atomic_path(Path(args.json)) as tmp_json:
            tmp_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


__all__ = ["encoder_macs_per_pixel", "fast_macs", "main", "macs_per_pixel", "matmul_peak"]
