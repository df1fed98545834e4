"""Pixel-centre coordinates in the [-1, 1] domain (spec section 1).

Channel 0 of every coordinate is the row (vertical) position, channel 1 the column.
The float32 recipe is the official one on purpose: nearest-code choices depend on it.
(The cell a render decodes with is the model's ``render_cell``.)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def axis_centres(n: int, v0: float = -1.0, v1: float = 1.0, device: torch.device | str | None = None,
                 start: int = 0, count: int | None = None) -> torch.Tensor:
    """Centres of cells ``start .. start+count-1`` of ``n`` equal cells covering [v0, v1].

    Float32 and bit-identical to the official recipe: the half-cell ``r`` and the offsets are
    Python doubles that PyTorch rounds to float32 before the float32 multiply-then-add
    ``float32(2r) * k + float32(v0 + r)``. A slice (start, count) equals the same slice of the
    full sequence, which is what region rendering relies on.
    """
    r = (v1 - v0) / (2 * n)
    count = n - start if count is None else count
    return torch.arange(start, start + count, device=device).float() * (2 * r) + (v0 + r)


def make_coord(
    shape: Sequence[int],
    ranges: Sequence[tuple[float, float]] | None = None,
    flatten: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Grid of pixel centres: (H, W, 2) or flattened (H*W, 2), row-major, (row, col) channels."""
    seqs = []
    for i, n in enumerate(shape):
        v0, v1 = (-1.0, 1.0) if ranges is None else ranges[i]
        seqs.append(axis_centres(int(n), v0, v1, device))
    grid = torch.stack(torch.meshgrid(*seqs, indexing="ij"), dim=-1)
    return grid.reshape(-1, grid.shape[-1]) if flatten else grid

