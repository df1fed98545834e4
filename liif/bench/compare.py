"""``liif bench infer --compare``: the fast routes of several models on the same input and windows, timed in
turn in one run (fp32 first, then each other precision this hardware runs natively).

The first model is the baseline: each row gives px/s, the speed-up over the baseline, and its split
into the encoder (timed alone on the same LR region, with the render's halo) and the rest (maps,
hypernet, decoder). The rest is what the decoder family changes; the encoder is common to models
with the same encoder and bounds the whole-render speed-up at (baseline time) / (encoder time).
Multiply-adds per output pixel (the folded decoder, four ensemble codes) and per LR pixel (encoder,
layer-0 or hypernet) are counted from the model.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from liif.bench.macs import encoder_macs_per_pixel, macs_per_pixel
from liif.bench.timing import timed_interleaved
from liif.compute import Compute
from liif.models import ImplicitDecoder
from liif.render import Window, render, window_region
from liif.render.backend import TorchBackend


def encoder_alone(model: ImplicitDecoder, img: torch.Tensor, out_hw: tuple[int, int], win: Window,
                  settings: Compute) -> torch.Tensor:
    """The encoder on the LR region a one-tile fast render of ``win`` encodes, as the renderer runs it."""
    y0, y1, x0, x1 = window_region(model, (img.shape[-2], img.shape[-1]), out_hw, win)
    return TorchBackend(model, settings).encode(img[None, :, y0:y1, x0:x1])


def compare(models: dict[str, ImplicitDecoder], img: torch.Tensor, scales: list[float], max_px: int, repeat: int,
            settings: list[Compute], window: Any) -> list[dict[str, Any]]:
    """One row per (scale, precision, model); ``window(out_hw, max_px)`` picks the timed window."""
    rows: list[dict[str, Any]] = []
    names = list(models)
    for s in scales:
        out_hw = (round(img.shape[1] * s), round(img.shape[2] * s))
        win: Window = window(out_hw, max_px)
        px = win.h * win.w
        for c in settings:
            fns: dict[str, Any] = {}
            for name, model in models.items():
                fns[name] = functools.partial(render, model, img, out_hw, win, precision=c.precision)
                fns[f"{name}/encoder"] = functools.partial(encoder_alone, model, img, out_hw, win, c)
            with torch.no_grad():
                res = timed_interleaved(fns, repeat, img.device)
            base_t, base_enc = res[names[0]][0], res[f"{names[0]}/encoder"][0]
            parts = []
            for name, model in models.items():
                t, enc = res[name][0], res[f"{name}/encoder"][0]
                # the rest, by difference; on tiny inputs timing noise can make it <= 0: no ratio then
                rest, base_rest = t - enc, base_t - base_enc
                dec_speedup = base_rest / rest if rest > 0 and base_rest > 0 else None
                row = {"scale": s, "output": f"{out_hw[1]}x{out_hw[0]}", "window": f"{win.w}x{win.h}",
                       "precision": c.precision, "model": name, "method": model.method, "seconds": t,
                       "px_s": px / t, "speedup": base_t / t, "encoder_s": enc,
                       "decoder_s": rest, "decoder_speedup": dec_speedup,
                       "speedup_bound_by_encoder": base_t / enc,
                       "macs_per_output_px": macs_per_pixel(model, folded=True),
                       "macs_per_lr_px": encoder_macs_per_pixel(model) + model.macs_per_lr_pixel()}
                rows.append(row)
                without = "n/a" if dec_speedup is None else f"{dec_speedup:.1f}x"
                parts.append(f"{name} {row['px_s']:,.0f} px/s = {row['speedup']:.2f}x (without the encoder "
                             f"{without}; encoder {enc:.3f} s of {t:.3f} s), "
                             f"{row['macs_per_output_px']:,} MACs/px")
            print(f"x{s:g} {c.precision} ({out_hw[1]}x{out_hw[0]}, window {win.w}x{win.h}): " + " | ".join(parts),
                  flush=True)
    return rows
