"""End-to-end GPU figures for docs/gpu-results.json (run by scripts/gpu-check.sh): the API from a PIL
image to a PIL image, 1920x1080 -> 3840x2160, per precision (best of 3, after a warm-up), and a
profile of one bf16 render: the CUDA kernels that take the time.

Usage: python scripts/gpu_e2e.py OUT.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image


def main() -> int:
    import liif
    from liif.demo import test_card
    from liif.render import render

    out = Path(sys.argv[1])
    src = test_card(512).resize((1920, 1080), Image.Resampling.BICUBIC)
    res: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for p in ("fp32", "tf32", "bf16", "fp16"):
        up = liif.load("edsr-baseline-liif", device="cuda", precision=p)
        up.upscale(src, size=(2160, 3840))  # warm-up: cuDNN plans, allocator
        best = min(_timed(lambda up=up: up.upscale(src, size=(2160, 3840))) for _ in range(3))
        res[f"api_pil_to_pil_{p}_s"] = best
        print(f"API PIL -> PIL 1920x1080 -> 3840x2160, {p}: {best:.3f} s", flush=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    up = liif.load("edsr-baseline-liif", device="cuda", precision="bf16")
    img = torch.from_numpy(__import__("numpy").asarray(src)).permute(2, 0, 1).contiguous().cuda()
    render(up.model, img, (2160, 3840), precision="bf16")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        render(up.model, img, (2160, 3840), precision="bf16")
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60)
    print(table, flush=True)
    res["profile_bf16_top15"] = table
    out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
