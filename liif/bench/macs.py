"""Multiply-adds of a render, counted from the model: the decoder per output pixel, the encoder per LR
pixel, and all of a one-tile fast render (the work that the fraction of the matmul peak is measured on)."""
from __future__ import annotations

from typing import Any

import torch

from liif.models import ImplicitDecoder
from liif.render import Window, window_region


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
