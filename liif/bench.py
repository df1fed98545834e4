"""``liif bench infer``: the reference route vs the fast route in each precision this hardware runs
natively (CPU: fp32, plus bf16 where native; CUDA: fp32, TF32, bf16, fp16), measured in one run.

Absolute times on shared machines mean little, so the figures that matter are ratios measured
side by side in the same process, plus the fraction of this machine's matmul peak (measured
here too) that each path reaches, and peak RSS of whole ``liif upscale`` processes.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
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

from liif import checkpoints, compute, limits, weights
from liif.compute import fp32_math
from liif.errors import LiifError
from liif.fileio import write_text_atomic
from liif.imaging import as_float_chw
from liif.models import ImplicitDecoder
from liif.render import Window, render, window_region


def macs_per_pixel(model: ImplicitDecoder, folded: bool) -> int:
    """Multiply-adds per output pixel of the decoder (4 ensemble codes); EDSR-baseline-LIIF: 1.38 M
    official, 0.79 M folded (layer 0 becomes a gather plus the offset and cell terms)."""
    return model.macs_per_code(folded) * (4 if model.local_ensemble else 1)


def encoder_macs_per_pixel(model: ImplicitDecoder) -> int:
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


def fast_macs(model: ImplicitDecoder, lr_hw: tuple[int, int], out_hw: tuple[int, int], win: Window) -> int:
    """All multiply-adds of a one-tile fast render of ``win``: encoder and layer-0 conv on the LR box
    the window needs (plus the encoder's halo), and the folded decoder on every window pixel."""
    y0, y1, x0, x1 = window_region(model, lr_hw, out_hw, win)
    per_lr_px = encoder_macs_per_pixel(model) + model.macs_per_lr_pixel()
    return (y1 - y0) * (x1 - x0) * per_lr_px + win.h * win.w * macs_per_pixel(model, folded=True)


def matmul_peak(dtype: torch.dtype, device: torch.device, tf32: bool = False, windows: int = 8,
                seconds: float = 0.25) -> float:
    """GFLOP/s of an (M x 256) @ (256 x 256) GEMM, the decoder's shape (M = 4096 on the CPU, 1M on
    CUDA, where small GEMMs only measure launch overhead): the best of several short windows, since
    one long window on a shared machine under-reads the peak."""
    m = 4096 if device.type == "cpu" else 1 << 20
    a = torch.randn(m, 256, device=device).to(dtype)
    b = torch.randn(256, 256, device=device).to(dtype)
    best = 0.0
    with fp32_math(device, "tf32" if tf32 else "fp32"):
        for _ in range(5):
            torch.mm(a, b)
        for _ in range(windows):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                torch.mm(a, b)
                n += 1
            sync(device)
            best = max(best, 2 * m * 256 * 256 * n / (time.perf_counter() - t0) / 1e9)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def centred_window(out_hw: tuple[int, int], max_px: int) -> Window:
    h, w = out_hw
    side = int(max_px ** 0.5)
    wh, ww = min(h, side), min(w, side)
    return Window((h - wh) // 2, (w - ww) // 2, wh, ww)


def timed_interleaved(fns: dict[str, Any], repeat: int, device: torch.device) -> dict[str, tuple[float, torch.Tensor]]:
    """Best-of-``repeat`` time of each function, run in turn (a, b, c, a, b, c, ...) so that a slow
    spell of a shared machine hits every path alike instead of one of them. CUDA work is
    synchronised before and after each call, so the time is the whole computation."""
    best: dict[str, tuple[float, torch.Tensor]] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            out = fn()
            sync(device)
            dt = time.perf_counter() - t0
            if name not in best or dt < best[name][0]:
                best[name] = (dt, out)
    return best


def bench_precisions(device: torch.device) -> tuple[list[str], list[str]]:
    """(precisions timed on ``device``, one line per precision skipped and why)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return ["fp32", "tf32", "bf16", "fp16"], []
        return ["fp32", "tf32", "fp16"], ["bf16: not supported by this GPU"]
    if compute.native(device) == "bf16":
        return ["fp32", "bf16"], []
    return ["fp32"], [f"bf16: not native on this CPU ({compute.cpu_info().isa}, no AVX512-BF16/AMX); "
                      "it would run emulated, several times slower than fp32, so `auto` and `--precision bf16` "
                      "run fp32 here"]


def throughput(model: ImplicitDecoder, img: torch.Tensor, scales: list[float], max_px: int, repeat: int,
               precs: list[str]) -> list[dict[str, Any]]:
    device = img.device
    rows = []
    peaks = {p: matmul_peak(compute.dtype(p), device, tf32=p == "tf32") for p in precs}
    print("measured matmul peak (M x 256 @ 256 x 256): "
          + ", ".join(f"{p} {v:,.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    for s in scales:
        out_hw = (round(img.shape[1] * s), round(img.shape[2] * s))
        win = centred_window(out_hw, max_px)
        px = win.h * win.w
        fns: dict[str, Any] = {"reference": functools.partial(render, model, img, out_hw, win, method="reference")}
        for p in precs:
            fns[p] = functools.partial(render, model, img, out_hw, win, precision=p)
        with torch.no_grad():
            res = timed_interleaved(fns, repeat, device)
        t_ref, ref = res["reference"]
        row: dict[str, Any] = {"scale": s, "output": f"{out_hw[1]}x{out_hw[0]}", "window_px": px,
                               "reference_px_s": px / t_ref,
                               "reference_peak_fraction": px / t_ref * macs_per_pixel(model, False) * 2 / 1e9
                               / peaks["fp32"]}
        work = 2 * fast_macs(model, (img.shape[-2], img.shape[-1]), out_hw, win) / 1e9
        parts = [f"x{s:g} ({row['output']}, window {win.w}x{win.h}): reference {row['reference_px_s']:,.0f} px/s"]
        for p in precs:
            t, out = res[p]
            row[f"fast_{p}_px_s"] = px / t
            row[f"{p}_speedup"] = t_ref / t
            row[f"{p}_max_abs_diff"] = float((out - ref).abs().max())
            row[f"{p}_peak_fraction"] = px / t * macs_per_pixel(model, True) * 2 / 1e9 / peaks[p]
            # the speed-up the fast path would show if all its work (encoder included) ran at the peak
            row[f"{p}_speedup_bound"] = t_ref / (work / peaks[p])
            parts.append(f"fast {p} {px / t:,.0f} px/s = {row[f'{p}_speedup']:.2f}x (bound at peak "
                         f"{row[f'{p}_speedup_bound']:.2f}x, {row[f'{p}_peak_fraction']:.0%} of peak), "
                         f"max|diff| {row[f'{p}_max_abs_diff']:.1e}")
        rows.append(row)
        print(" | ".join(parts), flush=True)
    return rows


def big_renders(model: ImplicitDecoder, device: torch.device, precs: list[str], repeat: int, huge: bool,
                max_memory: int | None) -> list[dict[str, Any]]:
    """Whole renders of real sizes, in-process (CUDA: wall time with synchronised timers and
    ``torch.cuda.max_memory_allocated``): 1920x1080 -> 3840x2160 (reference route too), and with
    ``huge`` the upstream issue #44 case 4608x3456 -> 9216x6912 (fast route only)."""
    from liif.demo import test_card

    cases = [((1080, 1920), (2160, 3840), True)]
    if huge:
        cases.append(((3456, 4608), (6912, 9216), False))
    rows: list[dict[str, Any]] = []
    for in_hw, out_hw, with_ref in cases:
        card = np.array(test_card(512).resize((in_hw[1], in_hw[0]), Image.Resampling.BICUBIC))
        img = torch.from_numpy(card).permute(2, 0, 1).contiguous().to(device)  # uint8, as the API keeps it
        paths = {p: functools.partial(render, model, img, out_hw, precision=p, max_memory=max_memory) for p in precs}
        if with_ref:
            paths = {"reference": functools.partial(render, model, img, out_hw, method="reference"), **paths}
        for name, fn in paths.items():
            best, peak = math.inf, 0
            for _ in range(repeat if name != "reference" else 1):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = fn()
                sync(device)
                best = min(best, time.perf_counter() - t0)
                if device.type == "cuda":
                    peak = max(peak, torch.cuda.max_memory_allocated(device))
                del out
            px = out_hw[0] * out_hw[1]
            row = {"case": f"{in_hw[1]}x{in_hw[0]} -> {out_hw[1]}x{out_hw[0]}", "path": name, "seconds": best,
                   "px_s": px / best, "peak_gpu_gib": peak / 2**30 if device.type == "cuda" else None}
            rows.append(row)
            mem = f", max_memory_allocated {peak / 2**30:.2f} GiB" if device.type == "cuda" else ""
            print(f"{row['case']}, {name}: {best:.3f} s ({px / best / 1e6:,.1f} M px/s){mem}", flush=True)
        ref_s = next((r["seconds"] for r in rows if r["case"] == rows[-1]["case"] and r["path"] == "reference"), None)
        for r in rows:
            if r["case"] == rows[-1]["case"]:
                r["ratio_vs_reference"] = ref_s / r["seconds"] if ref_s else None
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


def memory(weights_file: Path, folder: Path, huge: bool, precs: list[str]) -> list[dict[str, Any]]:
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


def main(args: argparse.Namespace) -> int:
    if args.what == "train":
        from liif.train import bench as train_bench

        return int(train_bench.main(args))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LiifError("--device cuda: CUDA is not available")
    wfile = weights.path(args.weights)
    model, spec = checkpoints.load(wfile, device=device)
    from liif.demo import test_card

    card = np.array(test_card(args.size))
    img = as_float_chw(card).to(device)
    scales = [float(s) for s in args.scales.split(",")]
    precs, skipped = bench_precisions(device)
    where = (f"GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda"
             else compute.cpu_info().describe())
    print(f"liif bench infer: model {spec.method}/{spec.encoder}, {args.size}x{args.size} input, "
          f"torch {torch.__version__}, device {device} ({where}), "
          f"{os.cpu_count()} CPUs; timing reference + fast {', '.join(precs)}", flush=True)
    for line in skipped:
        print(f"  skipped {line}", flush=True)
    report: dict[str, Any] = {"model": spec.to_dict(), "device": str(device), "where": where,
                              "torch": torch.__version__,
                              "cpu": dataclasses.asdict(compute.cpu_info()), "precisions": precs,
                              "skipped": skipped,
                              "throughput": throughput(model, img, scales, args.max_window_px, args.repeat, precs)}
    if args.big:
        max_memory = limits.parse_memory(args.max_memory) if args.max_memory else None
        report["big"] = big_renders(model, device, precs, args.repeat, args.huge, max_memory)
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="liif-bench-") as tmp:
            report["memory"] = memory(wfile, Path(tmp), args.huge, [p for p in precs if p in ("fp32", "bf16")])
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


__all__ = ["encoder_macs_per_pixel", "fast_macs", "main", "macs_per_pixel", "matmul_peak"]
