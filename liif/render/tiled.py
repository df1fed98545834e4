"""The fast, memory-bounded route: ``render`` and the tile generator behind it.

Same function as the reference route up to float rounding, for any decoder family behind the seam
(``liif.models.decoder``): per tile, the encoder and the method's LR maps run once per LR pixel of
the tile's footprint (plus halo); per stripe of output pixels, each query gathers its four codes'
map rows (indices and offsets from the separable axis plans), the backend decodes them in blocks
of ~1K queries x 4 codes on the CPU (cache sized) or whole stripes of up to 1M queries on CUDA,
the four predictions are blended with the area weights, and the method's global term is added.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import torch

from liif.compute import Compute
from liif.coords import axis_centres
from liif.errors import LiifError
from liif.geometry import ENSEMBLE_SHIFTS, area, area_blend
from liif.models.decoder import ImplicitDecoder
from liif.render.backend import TorchBackend
from liif.render.grouped import GroupBackend, decode_stripe_grouped, stripes
from liif.render.kernels import release_free_memory
from liif.render.mapcache import ImageMaps
from liif.render.plan import (
    BLOCK_QUERIES,
    AxisPlan,
    Box,
    encoder_halo,
    halo_region,
    lr_box,
    plan_axis,
    plan_tiles,
    stripe_plan,
    working_set,
)
from liif.render.reference import render_reference
from liif.render.window import Window


class Backend(Protocol):
    """What ``render_tiles`` needs from a compute backend (``TorchBackend``, ``OrtBackend``)."""

    def encode(self, crop: torch.Tensor) -> torch.Tensor: ...
    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor: ...
    def decode(self, maps: torch.Tensor, idx: torch.Tensor, rel: torch.Tensor,
               rel_cell: torch.Tensor) -> torch.Tensor: ...
    def global_term(self, crop: torch.Tensor, coord: torch.Tensor) -> torch.Tensor | None: ...


def render(
    model: ImplicitDecoder,
    img: torch.Tensor,
    out_hw: tuple[int, int],
    window: Window | None = None,
    method: str = "fast",
    precision: str = "fp32",
    max_memory: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """RGB image (3, h, w) in [0, 1] -> raw prediction (3, window.h, window.w), float32."""
    window = window or Window.full(out_hw)
    window.check(out_hw)
    if method == "reference":
        return render_reference(model, img, out_hw, window)
    if method != "fast":
        raise LiifError(f"unknown render method {method!r}; expected 'fast' or 'reference'")
    out = torch.empty(3, window.h, window.w, device=img.device)
    for (y, x), tile in render_tiles(model, img, out_hw, window, precision, max_memory, progress):
        out[:, y:y + tile.shape[1], x:x + tile.shape[2]] = tile
    return out


def render_tiles(
    model: ImplicitDecoder,
    img: torch.Tensor,
    out_hw: tuple[int, int],
    window: Window,
    precision: str = "fp32",
    max_memory: int | None = None,
    progress: bool = False,
    backend: Backend | None = None,
) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """:func:`render_planned` of a plan made here for ``precision`` (taken literally) and ``max_memory``."""
    compute = Compute.exact(img.device, precision, max_memory)
    plan = plan_render(model, (img.shape[-2], img.shape[-1]), out_hw, window, compute)
    return render_planned(model, img, plan, backend, progress)


@dataclass(frozen=True)
class RenderPlan:
    """A fast render of ``window``, planned once: the per-axis code indices and offsets, the cell,
    the output tiles (each with its LR footprint plus halo within the budget) and the stripe and
    block sizes of the decode. ``tiles`` are ((r0, r1), (c0, c1)) in window coordinates, row-major."""

    out_hw: tuple[int, int]
    lr_hw: tuple[int, int]
    window: Window
    compute: Compute
    rows: AxisPlan
    cols: AxisPlan
    rel_cell: torch.Tensor
    halo: int
    tiles: list[tuple[tuple[int, int], tuple[int, int]]]
    stripe: int
    block: int
    ensemble: bool  # the local ensemble (four codes per pixel) or the nearest code only


def relative_cell(model: ImplicitDecoder, out_hw: tuple[int, int], lr_hw: tuple[int, int],
                  device: torch.device) -> torch.Tensor:
    """The cell a render of ``out_hw`` from ``lr_hw`` decodes with, in LR pixels: (2,) float32."""
    cy, cx = model.render_cell(out_hw, lr_hw)
    return torch.tensor([cy * lr_hw[0], cx * lr_hw[1]], dtype=torch.float32, device=device)


def plan_render(model: ImplicitDecoder, lr_hw: tuple[int, int], out_hw: tuple[int, int], window: Window,
                compute: Compute, max_tile_rows: int | None = None, local_ensemble: bool = True) -> RenderPlan:
    """Plan a fast render of ``window`` of an ``out_hw`` output from an ``lr_hw`` input.
    ``max_tile_rows`` caps the tiles' height (a streaming writer's band buffer); ``local_ensemble``
    False decodes each pixel from its nearest code only, even for a model with the ensemble: a
    quarter of the decode, for previews (the seams between codes show)."""
    window.check(out_hw)
    dev = compute.device
    h_lr, w_lr = lr_hw
    ens = model.local_ensemble and local_ensemble
    rows = plan_axis(out_hw[0], window.y, window.h, h_lr, ens, dev)
    cols = plan_axis(out_hw[1], window.x, window.w, w_lr, ens, dev)
    rel_cell = relative_cell(model, out_hw, lr_hw, dev)
    halo = encoder_halo(model)
    per_px, fixed = working_set(model, compute.dtype)
    stripe, stripe_bytes = stripe_plan(model, compute.budget, dev)
    tiles = plan_tiles(rows, cols, h_lr, w_lr, halo, compute.budget, per_px, fixed + stripe_bytes, window,
                       max_tile_rows)
    block = BLOCK_QUERIES if dev.type == "cpu" else stripe
    return RenderPlan(out_hw, lr_hw, window, compute, rows, cols, rel_cell, halo, tiles, stripe, block, ens)


def render_planned(model: ImplicitDecoder, img: torch.Tensor, plan: RenderPlan, backend: Backend | None = None,
                   progress: bool = False, source: ImageMaps | None = None,
                   cancel: Callable[[], bool] | None = None) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """Yield ((y, x) offset inside the window, raw prediction tile (3, th, tw)).

    Tiles come tile by tile (each tile in stripes, row-major); together they cover the window exactly
    once. ``backend``: a compute backend built once for many renders; by default a ``TorchBackend``.
    ``source``: the image's cached maps (``liif.render.mapcache``), read instead of encoding each
    tile's footprint (filling them where missing may stop with ``Interrupted`` when ``cancel()``).
    """
    if tuple(img.shape[-2:]) != plan.lr_hw:
        raise LiifError(f"the plan is for a {plan.lr_hw[1]}x{plan.lr_hw[0]} (WxH) input, got "
                        f"{img.shape[-1]}x{img.shape[-2]}")
    compute, window, rows, cols = plan.compute, plan.window, plan.rows, plan.cols
    dev, ens = img.device, plan.ensemble
    dec: Backend = backend if backend is not None else TorchBackend(model, compute)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=window.h * window.w, unit="px", unit_scale=True, desc="render", leave=False,
                   delay=1.0)  # only renders that take more than a moment show a bar
    with torch.no_grad():
        for (r0, r1), (c0, c1) in plan.tiles:
            if source is not None:  # the whole image's maps, the tile's codes computed
                region = (0, plan.lr_hw[0], 0, plan.lr_hw[1])
                crop = img[None]
                with compute.fp32_math():
                    maps = source.maps(lr_box(rows, cols, r0, r1, c0, c1), cancel)
            else:
                region = halo_region(lr_box(rows, cols, r0, r1, c0, c1), plan.halo, plan.lr_hw)
                crop = img[None, :, region[0]:region[1], region[2]:region[3]]
                # (fp32 modes are set around the compute only, never across a yield to the caller)
                with compute.fp32_math():
                    feat = dec.encode(crop)
                    maps = dec.lr_maps(feat, plan.rel_cell) if model.maps_see_cell else dec.lr_maps(feat)
                    maps = maps.reshape(-1, maps.shape[-1])
            # Decode the tile in stripes so per-pixel temporaries stay small next to the maps.
            step = max(1, plan.stripe // (c1 - c0))
            if getattr(dec, "grouped", False):  # whole runs of rows per stripe (``liif.render.grouped``)
                spans = stripes(rows, r0, r1, step)
            else:
                spans = [(s0, min(r1, s0 + step)) for s0 in range(r0, r1, step)]
            for s0, s1 in spans:
                with compute.fp32_math():
                    tile = decode_stripe(dec, maps, region, rows, cols, s0, s1, c0, c1, ens, plan.rel_cell,
                                         plan.block)
                    if model.has_global_term:  # LTE's bilinear input, sampled on the tile's crop
                        coords = crop_coords(plan.out_hw, window, (s0, s1, c0, c1), region, plan.lr_hw, dev)
                        extra = dec.global_term(crop, coords)
                        if extra is not None:
                            tile += extra.t().reshape(tile.shape)
                yield (s0, c0), tile
                if bar is not None:
                    bar.update((s1 - s0) * (c1 - c0))
            del maps
            release_free_memory()
    if bar is not None:
        bar.close()


def decode_stripe(dec: Backend, maps: torch.Tensor, region: Box, rows: AxisPlan, cols: AxisPlan,
                  r0: int, r1: int, c0: int, c1: int, ens: bool, rel_cell: torch.Tensor,
                  block: int = BLOCK_QUERIES) -> torch.Tensor:
    """Raw prediction (3, r1 - r0, c1 - c0) for output rows r0:r1, columns c0:c1 of the window,
    before any global term. ``maps`` holds the map rows of every LR pixel of ``region``.

    Code indices and offsets are laid out query-major, (pixel, code), for the whole stripe at once,
    so each block of the MLP is one contiguous slice and the blend runs once per stripe. A backend
    that decodes queries grouped by code (``grouped``: LMF's) gets them so (``liif.render.grouped``).
    """
    shifts = [(0 if a < 0 else 1, 0 if b < 0 else 1) for a, b in ENSEMBLE_SHIFTS] if ens else [(0, 0)]
    if getattr(dec, "grouped", False):
        return decode_stripe_grouped(cast(GroupBackend, dec), maps, region, rows, cols, (r0, r1, c0, c1), shifts,
                                     rel_cell)
    th, tw = r1 - r0, c1 - c0
    bw = region[3] - region[2]
    ri = rows.idx[:, r0:r1] - region[0]
    ci = cols.idx[:, c0:c1] - region[2]
    rr, cr = rows.rel[:, r0:r1], cols.rel[:, c0:c1]
    n, k = th * tw, len(shifts)
    idx = torch.stack([(ri[sy, :, None] * bw + ci[sx, None, :]).reshape(-1) for sy, sx in shifts], 1)
    ry = torch.stack([rr[sy, :, None].expand(th, tw).reshape(-1) for sy, _ in shifts], 1)
    rx = torch.stack([cr[sx, None, :].expand(th, tw).reshape(-1) for _, sx in shifts], 1)
    rel = torch.stack([ry, rx], -1)  # (n, k, 2)
    pred = torch.empty(n, k, 3, device=maps.device)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        pred[b0:b1] = dec.decode(maps, idx[b0:b1].reshape(-1), rel[b0:b1].reshape(-1, 2),
                                 rel_cell).view(b1 - b0, k, 3)
    if ens:
        out = area_blend(pred.unbind(1), area(rel).unbind(1), local_ensemble=True)
    else:
        out = pred[:, 0]
    return out.t().reshape(3, th, tw)


def crop_coords(out_hw: tuple[int, int], window: Window, stripe: Box, region: Box, lr_hw: tuple[int, int],
                device: torch.device) -> torch.Tensor:
    """Pixel centres (n, 2) of a stripe (window rows/cols r0:r1, c0:c1) in the [-1, 1] frame of the LR
    crop ``region``: a global term sampled on the crop equals the one sampled on the whole image."""
    r0, r1, c0, c1 = stripe
    axes = []
    for n_out, start, count, (a0, a1), n_lr in ((out_hw[0], window.y + r0, r1 - r0, region[:2], lr_hw[0]),
                                               (out_hw[1], window.x + c0, c1 - c0, region[2:], lr_hw[1])):
        u = axis_centres(n_out, device=device, start=start, count=count)
        if (a0, a1) != (0, n_lr):  # to the crop's frame: the same LR pixel position, counted from a0
            u = ((u + 1) * n_lr - 2 * a0) / (a1 - a0) - 1
        axes.append(u)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
