"""Timers for benchmarks on shared machines: CUDA-synchronised calls, paths timed in turn (best of N),
and the machine's measured matmul peak in a precision."""
from __future__ import annotations

import time
from typing import Any

import torch

from liif.compute import Compute


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(settings: Compute, windows: int = 8, seconds: float = 0.25) -> float:
    """GFLOP/s of an (M x 256) @ (256 x 256) GEMM, the decoder's shape (M = 4096 on the CPU, 1M on
    CUDA, where small GEMMs only measure launch overhead), in ``settings``' dtype and float32 math
    (TF32 for tf32 alone): the best of several short windows, since one long window on a shared
    machine under-reads the peak."""
    device = settings.device
    m = 4096 if device.type == "cpu" else 1 << 20
    a = torch.randn(m, 256, device=device).to(settings.dtype)
    b = torch.randn(256, 256, device=device).to(settings.dtype)
    best = 0.0
    with settings.fp32_math():
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

