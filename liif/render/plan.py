"""Planning a fast render: per-axis code indices and offsets, tiles that fit the memory budget, and
the LR region (codes plus the encoder's halo) each tile encodes.

On a regular output grid the nearest-code row depends only on the output row and the column only
on the output column, so indices, offsets and blend weights are separable: they are computed per
axis (``plan_axis``) with the reference's own rule (``liif.geometry.nearest_code``). Output tiles
whose LR footprint plus halo fits the budget are rendered one at a time, so peak memory does not
grow with the image.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from liif.coords import axis_centres
from liif.errors import LiifError
from liif.geometry import EPS_SHIFT, nearest_code
from liif.models.decoder import ImplicitDecoder
from liif.render.window import Window

BLOCK_QUERIES = 1024  # queries per MLP block on the CPU (cache sized)
STRIPE_PIXELS = 1 << 15  # output pixels decoded and yielded at a time (fewer under small budgets)
STRIPE_BYTES_PER_PIXEL = 64 * 4  # per code: indices, offsets, prediction, blend weights, temporaries
GPU_STRIPE_PIXELS = 1 << 20  # on CUDA a stripe is one block: few, large GEMMs instead of many launches

Box = tuple[int, int, int, int]  # LR rows/cols (y0, y1, x0, x1)


@dataclass
class AxisPlan:
    """Per output row (or column) of the window, for each of the two ensemble shifts on this axis:
    the nearest LR index and the offset to that code's centre in LR-pixel units."""

    idx: torch.Tensor  # (2, n) int64 (or (1, n) without local ensemble)
    rel: torch.Tensor  # (2, n) float32


@functools.lru_cache(maxsize=16)  # video frames render the same plan again and again; plans are read-only
def plan_axis(n_out: int, start: int, count: int, n_lr: int, local_ensemble: bool,
              device: torch.device) -> AxisPlan:
    coord = axis_centres(n_out, device=device, start=start, count=count)
    shifts, eps = ((-1, 1), EPS_SHIFT) if local_ensemble else ((0,), 0.0)
    pairs = [nearest_code(coord, n_lr, v, eps) for v in shifts]
    return AxisPlan(torch.stack([i for i, _ in pairs]), torch.stack([r for _, r in pairs]))


def working_set(model: ImplicitDecoder, dtype: torch.dtype) -> tuple[int, int]:
    """(bytes per LR pixel of a tile: input + encoder activations + the LR maps, fixed bytes: query blocks).

    The decoded stripe's own bytes (``stripe_pixels`` x ``STRIPE_BYTES_PER_PIXEL``) come on top."""
    enc_bytes = model.encoder.activation_bytes_per_pixel()  # type: ignore[operator]
    map_bytes = (4 + (torch.finfo(dtype).bits // 8 if dtype != torch.float32 else 0)) * model.map_channels
    fixed = 3 * BLOCK_QUERIES * 4 * model.mlp_width * 4 + (1 << 20)  # ~3 live (4 x block, width) activations
    return 12 + enc_bytes + map_bytes, fixed


def stripe_pixels(budget: int) -> int:
    """Output pixels per decoded stripe: ``STRIPE_PIXELS``, or fewer so stripes take <= 1/16 of the budget."""
    return max(BLOCK_QUERIES, min(STRIPE_PIXELS, budget // 16 // STRIPE_BYTES_PER_PIXEL))


def stripe_plan(model: ImplicitDecoder, budget: int, device: torch.device) -> tuple[int, int]:
    """(output pixels per stripe, bytes a stripe needs).

    CPU: ``stripe_pixels`` (blocks of 1K queries inside). CUDA: the stripe is decoded as one block,
    so it holds ~3 live (4 codes x width) fp32 activations per pixel; it may take half the budget."""
    if device.type == "cpu":
        n = stripe_pixels(budget)
        return n, n * STRIPE_BYTES_PER_PIXEL
    per_px = 3 * 4 * model.mlp_width * 4 + STRIPE_BYTES_PER_PIXEL
    n = max(BLOCK_QUERIES, min(GPU_STRIPE_PIXELS, budget // 2 // per_px))
    return n, n * per_px


def plan_tiles(rows: AxisPlan, cols: AxisPlan, h_lr: int, w_lr: int, halo: int, budget: int,
               bytes_per_px: int, fixed: int, window: Window,
               max_rows: int | None = None) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Split the window into output tiles whose LR footprint plus halo fits ``budget`` bytes
    (and, with ``max_rows``, at most that many rows high)."""
    avail = budget - fixed
    whole = lr_box(rows, cols, 0, window.h, 0, window.w)
    whole_px = (whole[1] - whole[0]) * (whole[3] - whole[2])
    if whole_px * bytes_per_px <= avail:
        side_lr = max(h_lr, w_lr)
    else:
        side_lr = int(math.sqrt(max(avail, 0) / bytes_per_px)) - 2 * halo - 2
        if side_lr < 8:
            need = (8 + 2 * halo + 2) ** 2 * bytes_per_px + fixed
            raise LiifError(f"memory budget {budget / 2**20:.0f} MiB is too small for one tile "
                            f"(need at least {need / 2**20:.0f} MiB)")
    # Output pixels per tile along each axis so that the LR footprint is about side_lr.
    th = max(1, min(window.h, int(side_lr * window.h / max(1, whole[1] - whole[0]))))
    tw = max(1, min(window.w, int(side_lr * window.w / max(1, whole[3] - whole[2]))))
    if max_rows is not None:
        th = max(1, min(th, max_rows))
    return [((r, min(r + th, window.h)), (c, min(c + tw, window.w)))
            for r in range(0, window.h, th) for c in range(0, window.w, tw)]


def lr_box(rows: AxisPlan, cols: AxisPlan, r0: int, r1: int, c0: int, c1: int) -> Box:
    """The LR codes (y0, y1, x0, x1) that output rows r0:r1, columns c0:c1 read."""
    ri, ci = rows.idx[:, r0:r1], cols.idx[:, c0:c1]
    return int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1


def encoder_halo(model: ImplicitDecoder) -> int:
    """LR pixels added around a tile's codes before encoding: the encoder's receptive radius + 1
    (the +1 also covers the two bilinear taps of a global term such as LTE's)."""
    return int(getattr(model.encoder, "receptive_radius", 0)) + 1


def halo_region(box: Box, halo: int, lr_hw: tuple[int, int]) -> Box:
    """The LR rows/cols (y0, y1, x0, x1) a tile encodes: its code ``box`` grown by ``halo``, clipped."""
    y0, y1, x0, x1 = box
    return max(0, y0 - halo), min(lr_hw[0], y1 + halo), max(0, x0 - halo), min(lr_hw[1], x1 + halo)


def window_region(model: ImplicitDecoder, lr_hw: tuple[int, int], out_hw: tuple[int, int], window: Window) -> Box:
    """The LR region a one-tile fast render of ``window`` encodes."""
    dev = torch.device("cpu")
    rows = plan_axis(out_hw[0], window.y, window.h, lr_hw[0], model.local_ensemble, dev)
    cols = plan_axis(out_hw[1], window.x, window.w, lr_hw[1], model.local_ensemble, dev)
    return halo_region(lr_box(rows, cols, 0, window.h, 0, window.w), encoder_halo(model), lr_hw)
