"""Decoding a stripe with its queries grouped by code, for methods that share work per code (LMF).

On the render's separable grid the nearest code of an output pixel for one ensemble shift is (row
code of its row, column code of its column), and both are non-decreasing along their axis: the
pixels that read one code form a rectangle, a run of rows times a run of columns. Runs of equal
length are batched (across the four ensemble shifts too), so a call decodes G codes x (a x b)
queries laid out (G, a, b): each code's map row is read once, not once per query, and whatever the
method computes per code (LMF's per-code scale and shift) broadcasts over its queries. Stripes are
cut where the row codes change (``stripes``), so runs are whole and few lengths occur. The
predictions land in the gather route's (pixel, code) layout, so the blend that follows is the same.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Protocol

import torch

from liif.render.plan import AxisPlan

GROUP_PAIRS = 1 << 14  # (code, query) pairs per decode call on the CPU: 1 MiB per 16-wide fp32 activation


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
    ``width`` codes wide whose top-left code is ``origin``."""
    r0, r1, c0, c1 = span
    tw, k = c1 - c0, len(shifts)
    row_runs = [runs(rows.idx[s, r0:r1] - origin[0], rows.rel[s, r0:r1]) for s in range(rows.idx.shape[0])]
    col_runs = [runs(cols.idx[s, c0:c1] - origin[1], cols.rel[s, c0:c1]) for s in range(cols.idx.shape[0])]
    # Per (a, b): the codes, row and column offsets and flat output positions of every shift's groups.
    jobs: dict[tuple[int, int], list[tuple[torch.Tensor, ...]]] = defaultdict(list)
    for t, (sy, sx) in enumerate(shifts):
        for a, (cy, py, ry) in row_runs[sy].items():
            for b, (cx, px, rx) in col_runs[sx].items():
                ny, nx = cy.shape[0], cx.shape[0]
                flat = (py * (tw * k) + t)[:, None, :, None] + (px * k)[None, :, None, :]  # (ny, nx, a, b)
                jobs[a, b].append(((cy[:, None] * width + cx[None, :]).reshape(-1),
                                   ry[:, None, :].expand(ny, nx, a).reshape(-1, a),
                                   rx[None, :, :].expand(ny, nx, b).reshape(-1, b), flat.reshape(-1)))
    pred = torch.empty(out_dim, (r1 - r0) * tw * k, device=maps.device)  # channel-major, as LMF computes
    for (a, b), parts in jobs.items():
        idx, rel_y, rel_x, flat = (torch.cat(p) for p in zip(*parts, strict=True))
        per_call = max(1, max_pairs // (a * b))
        for g0 in range(0, idx.shape[0], per_call):
            g1 = min(idx.shape[0], g0 + per_call)
            out = dec.decode_groups(maps, idx[g0:g1], rel_y[g0:g1], rel_x[g0:g1], rel_cell)
            pred.index_copy_(1, flat[g0 * a * b:g1 * a * b], out.permute(3, 0, 1, 2).reshape(out_dim, -1))
    return pred.view(out_dim, -1, k).permute(1, 2, 0)
