"""The reference route: the official op structure, whole-image features, queries in chunks of 30000.

The yardstick every fast route is compared with (and the goldens' route): ``model.predict``, i.e.
the method's own ``query`` plus its global term, on every pixel centre of the window.
"""
from __future__ import annotations

import torch

from liif.compute import fp32_math
from liif.coords import axis_centres
from liif.imaging import as_float
from liif.models.decoder import ImplicitDecoder
from liif.render.window import Window

REFERENCE_CHUNK = 30000


@torch.no_grad()
def render_reference(model: ImplicitDecoder, img: torch.Tensor, out_hw: tuple[int, int],
                     window: Window) -> torch.Tensor:
    """RGB image (3, h, w) in [0, 1] (or uint8) -> raw prediction (3, window.h, window.w), float32."""
    dev = img.device
    coord = torch.stack(torch.meshgrid(
        axis_centres(out_hw[0], device=dev, start=window.y, count=window.h),
        axis_centres(out_hw[1], device=dev, start=window.x, count=window.w),
        indexing="ij"), dim=-1).reshape(-1, 2)
    cell = torch.tensor(model.render_cell(out_hw, (img.shape[-2], img.shape[-1])), device=dev)
    cell = cell.expand(coord.shape[0], 2)
    with fp32_math(dev):
        inp = model.normalize(as_float(img[None]))
        feat = model.encoder(inp)
        preds = [model.predict(inp, feat, coord[None, i:i + REFERENCE_CHUNK], cell[None, i:i + REFERENCE_CHUNK])
                 for i in range(0, coord.shape[0], REFERENCE_CHUNK)]
    return torch.cat(preds, dim=1)[0].t().reshape(-1, window.h, window.w)
