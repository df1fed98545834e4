"""Decoding a stripe with its queries grouped by code, for methods that share work per code (LMF).

On the render's separable grid the nearest code of an output pixel for one ensemble shift is (row
code of its row, column code of its column), and both are non-decreasing along their axis: the
pixels that read one code form a rectangle, a run of rows times a run of columns. Runs of equal
length are batched, so a call decodes G codes x (a x b) queries laid out (G, a, b): each code's map
row is read once, not once per query, and whatever the method computes per code (LMF's per-code
scale and shift) broadcasts over its queries. Stripes are cut where the row codes change
(``stripes``), so runs are whole and few lengths occur. The predictions land in the gather route's
(pixel, code) layout and are blended alike.
"""
from __future__ import annotations

from typing import Protocol

import torch

from liif.geometry import AREA_EPS, area_blend
from liif.render.plan import AxisPlan

GROUP_PAIRS = 1 << 15  # (code, query) pairs per decode call on the CPU: 2 MiB per 16-wide fp32 activation


class GroupBackend(Protocol):
    def decode_groups(self, maps: torch.Tensor, idx: torch.Tensor, rel_y: torch.Tensor, rel_x: torch.Tensor,
                      rel_cell: torch.Tensor) -> torch.Tensor: ...


def stripes(rows: AxisPlan, r0: int, r1: int, step: int) -> list[tuple[int, int]]:
    """Output rows r0:r1 in stripes of at most ``step`` rows, cut where the row code changes when a run
    fits (the codes of both row shifts change at the same rows: LR pixel centres)."""
    idx = rows.idx[0, r0:r1]
    cuts = ((idx[1:] != idx[:-1]).nonzero().view(-1) + 1 + r0).tolist() + [r1]
    out, s0, last = [], r0, r0
    for c in cuts:
        if c - s0 > step and last > s0:  # the next run would overflow: cut at the last code change
            out.append((s0, last))
            s0 = last
        while c - s0 > step:  # one run longer than a stripe (huge scales): cut inside it
            out.append((s0, s0 + step))
            s0 += step
        last = c
    if s0 < r1:
        out.append((s0, r1))
    return out


def runs(idx: torch.Tensor, rel: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Along one axis of a stripe, codes ``idx`` (n,) (non-decreasing) and offsets ``rel`` (n,): per run
    length L, (the codes of the runs of that length (m,), their positions (m, L), their offsets (m, L))."""
    codes, counts = torch.unique_consecutive(idx, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    out = {}
    for length in torch.unique(counts).tolist():
        sel = (counts == length).nonzero().view(-1)
        pos = starts[sel, None] + torch.arange(length, device=idx.device)
        out[int(length)] = (codes[sel], pos, rel[pos])
    return out


def decode_grouped(dec: GroupBackend, maps: torch.Tensor, width: int, rows: AxisPlan, cols: AxisPlan,
                   origin: tuple[int, int], span: tuple[int, int, int, int], shifts: list[tuple[int, int]],
                   rel_cell: torch.Tensor, out_dim: int = 3, max_pairs: int = GROUP_PAIRS) -> torch.Tensor:
    """Predictions (n, k, out_dim) of output rows r0:r1, columns c0:c1 (``span``) for the ensemble ``shifts``
    ((row shift, column shift) indices into the axis plans); ``maps`` holds the rows of an LR region
    ``width`` codes wide whose top-left code is ``origin``.

    Per shift, row-run length a and chunk of row runs: a band of rows is decoded one column-run length
    b at a time and its columns put in place, then the band's rows: two copies along one axis each,
    no per-query index."""
    r0, r1, c0, c1 = span
    th, tw, k = r1 - r0, c1 - c0, len(shifts)
    row_runs = [runs(rows.idx[s, r0:r1] - origin[0], rows.rel[s, r0:r1]) for s in range(rows.idx.shape[0])]
    col_runs = [runs(cols.idx[s, c0:c1] - origin[1], cols.rel[s, c0:c1]) for s in range(cols.idx.shape[0])]
    pred = torch.empty(out_dim, th, tw, k, device=maps.device)  # channel-major, as LMF computes
    for t, (sy, sx) in enumerate(shifts):
        by_col = col_runs[sx]
        whole = len(by_col) == 1  # one column-run length: the band's columns are all columns, in order
        for a, (cy, py, ry) in row_runs[sy].items():
            per_band = max(1, max_pairs // (a * tw))
            for y0 in range(0, cy.shape[0], per_band):
                cys, pys, rys = cy[y0:y0 + per_band], py[y0:y0 + per_band], ry[y0:y0 + per_band]
                ny = cys.shape[0]
                band = None if whole else torch.empty(out_dim, ny * a, tw, device=maps.device)
                for b, (cx, px, rx) in by_col.items():
                    nx = cx.shape[0]
                    idx = (cys[:, None] * width + cx[None, :]).reshape(-1)
                    out = dec.decode_groups(maps, idx, rys[:, None, :].expand(ny, nx, a).reshape(-1, a),
                                            rx[None, :, :].expand(ny, nx, b).reshape(-1, b), rel_cell)
                    block = out.reshape(ny, nx, a, b, out_dim).permute(4, 0, 2, 1, 3).reshape(out_dim, ny * a, nx * b)
                    if band is None:
                        band = block
                    else:
                        band.index_copy_(2, px.reshape(-1), block)
                assert band is not None
                pred[:, :, :, t].index_copy_(1, pys.reshape(-1), band)
    return pred.view(out_dim, th * tw, k).permute(1, 2, 0)


def decode_stripe_grouped(dec: GroupBackend, maps: torch.Tensor, region: tuple[int, int, int, int], rows: AxisPlan,
                          cols: AxisPlan, span: tuple[int, int, int, int], shifts: list[tuple[int, int]],
                          rel_cell: torch.Tensor) -> torch.Tensor:
    """``liif.render.tiled.decode_stripe`` for a grouped backend: (3, th, tw), the same blend. The areas are
    |offset_row| x |offset_col| per shift, outer products of the axis plans (equal to |offset_row x
    offset_col| bit for bit: IEEE products are sign-symmetric), so no per-query offsets are built."""
    r0, r1, c0, c1 = span
    pred = decode_grouped(dec, maps, region[3] - region[2], rows, cols, (region[0], region[2]), span, shifts,
                          rel_cell)
    if len(shifts) == 1:
        out = pred[:, 0]
    else:
        areas = [(rows.rel[sy, r0:r1].abs()[:, None] * cols.rel[sx, c0:c1].abs()[None, :]).reshape(-1) + AREA_EPS
                 for sy, sx in shifts]
        out = area_blend(pred.unbind(1), areas, local_ensemble=True)
    return out.t().reshape(-1, r1 - r0, c1 - c0)
