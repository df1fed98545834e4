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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from liif import checkpoints, compute, limits, weights
from liif.bench.macs import fast_macs, macs_per_pixel
from liif.bench.memory import upscale_peak_rss
from liif.bench.timing import matmul_peak, sync, timed_interleaved
from liif.compute import Compute
from liif.errors import LiifError
from liif.fileio import write_text_atomic
from liif.imaging import as_float_chw
from liif.models import ImplicitDecoder
from liif.render import Window, render


def centred_window(out_hw: tuple[int, int], max_px: int) -> Window:
    h, w = out_hw
    side = int(max_px ** 0.5)
    wh, ww = min(h, side), min(w, side)
    return Window((h - wh) // 2, (w - ww) // 2, wh, ww)


def bench_precisions(device: torch.device) -> tuple[list[Compute], list[str]]:
    """(the settings timed on ``device``, one per precision, fp32 first; one line per precision skipped and why)."""
    def exact(precs: list[str]) -> list[Compute]:
        return [Compute.exact(device, p) for p in precs]

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return exact(["fp32", "tf32", "bf16", "fp16"]), []
        return exact(["fp32", "tf32", "fp16"]), ["bf16: not supported by this GPU"]
    if compute.native(device) == "bf16":
        return exact(["fp32", "bf16"]), []
    return exact(["fp32"]), [f"bf16: not native on this CPU ({compute.cpu_info().isa}, no AVX512-BF16/AMX); "
                      "it would run emulated, several times slower than fp32, so `auto` and `--precision bf16` "
                      "run fp32 here"]


def throughput(model: ImplicitDecoder, img: torch.Tensor, scales: list[float], max_px: int, repeat: int,
               settings: list[Compute]) -> list[dict[str, Any]]:
    """The reference and the fast route in each of ``settings`` (fp32 first) on a centred window of at most
    ``max_px`` output pixels per scale, timed in turn: px/s, speed-ups, max |diff|, fractions of the peak."""
    device = img.device
    rows = []
    precs = [c.precision for c in settings]
    peaks = {c.precision: matmul_peak(c) for c in settings}
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


def big_renders(model: ImplicitDecoder, device: torch.device, settings: list[Compute], repeat: int, huge: bool,
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
        paths = {c.precision: functools.partial(render, model, img, out_hw, precision=c.precision,
                                                max_memory=max_memory) for c in settings}
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


def label(weights_arg: str) -> str:
    """A model's name in the comparison: its pretrained name, or its file's stem."""
    return Path(weights_arg).stem if ("/" in weights_arg or "." in weights_arg) else weights_arg


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LiifError("--device cuda: CUDA is not available")
    wfile = weights.path(args.weights)
    model, spec = checkpoints.load(wfile, device=device)
    from liif.demo import test_card

    card = np.array(test_card(args.size))
    img = as_float_chw(card).to(device)
    scales = [float(s) for s in args.scales.split(",")]
    settings, skipped = bench_precisions(device)
    precs = [c.precision for c in settings]
    where = (f"GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda"
             else compute.cpu_info().describe())
    print(f"liif bench infer: model {spec.method}/{spec.encoder}, {args.size}x{args.size} input, "
          f"torch {torch.__version__}, device {device} ({where}), "
          f"{os.cpu_count()} CPUs; timing "
          + (f"the fast routes of {1 + len(args.compare)} models" if args.compare else "reference + fast")
          + f" in {', '.join(precs)}", flush=True)
    for line in skipped:
        print(f"  skipped {line}", flush=True)
    report: dict[str, Any] = {"model": spec.to_dict(), "device": str(device), "where": where,
                              "torch": torch.__version__,
                              "cpu": dataclasses.asdict(compute.cpu_info()), "precisions": precs,
                              "skipped": skipped}
    if args.compare:
        from liif.bench.compare import compare

        models = {label(args.weights): model}
        for w in args.compare:
            models[label(w)] = checkpoints.load(weights.path(w), device=device)[0]
        report["compare"] = compare(models, img, scales, args.max_window_px, args.repeat, settings, centred_window)
    else:
        report["throughput"] = throughput(model, img, scales, args.max_window_px, args.repeat, settings)
    if args.big:
        max_memory = limits.parse_memory(args.max_memory) if args.max_memory else None
        report["big"] = big_renders(model, device, settings, args.repeat, args.huge, max_memory)
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="liif-bench-") as tmp:
            cpu_precs = [p for p in precs if p in ("fp32", "bf16")]  # the upscale runs are on the CPU
            report["memory"] = upscale_peak_rss(wfile, Path(tmp), args.huge, cpu_precs)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0

