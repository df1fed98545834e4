"""The local ensemble's geometry: which latent codes a query reads and how their predictions blend.

Shared by every decoder family (LIIF, LTE) and every route (reference, training fold, fast renderer,
ONNX). For a query at ``coord`` (row, col in [-1, 1]) on an LR grid of h x w codes, the four
ensemble codes are the nearest codes after shifting the query by one code width, -1 or +1 on each
axis (plus ``EPS_SHIFT``, then clamped inside the image); each prediction is weighted by the area
of the rectangle between the query and the diagonally opposite code (spec section 2).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from liif.coords import axis_centres, make_coord

ENSEMBLE_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))  # (row, col); row shift outer, col shift inner
EPS_SHIFT = 1e-6
CLAMP = 1 - 1e-6
AREA_EPS = 1e-9


def ensemble_shifts(local_ensemble: bool) -> tuple[tuple[tuple[int, int], ...], float]:
    """(shifts, eps): the four shifted codes with their eps, or the single unshifted code."""
    return (ENSEMBLE_SHIFTS, EPS_SHIFT) if local_ensemble else (((0, 0),), 0.0)


def sample_nearest(feat: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Nearest lookup of (B, C, H, W) at (B, Q, 2) (row, col) coordinates -> (B, Q, C): the official rule."""
    grid = coord.flip(-1).unsqueeze(1)
    out = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1)


def sample_bilinear(img: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup (border padding) of (B, C, H, W) at (B, Q, 2) (row, col) coordinates -> (B, Q, C)."""
    grid = coord.flip(-1).unsqueeze(1)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1)


def reference_codes(coord: torch.Tensor, lr_hw: tuple[int, int],
                    local_ensemble: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ensemble in the official op structure, for the methods' reference ``query``: per code, the
    shifted and clamped query coordinates (B, Q, 2), at which a method samples its LR maps with
    ``sample_nearest``, and the offset (B, Q, 2) from that code's centre in LR-pixel units."""
    H, W = lr_hw
    B = coord.shape[0]
    shifts, eps = ensemble_shifts(local_ensemble)
    ry, rx = 2 / H / 2, 2 / W / 2  # half a code in [-1, 1] units
    centres = make_coord((H, W), flatten=False, device=coord.device).permute(2, 0, 1)
    centres = centres.unsqueeze(0).expand(B, 2, H, W)
    for vy, vx in shifts:
        shifted = coord.clone()
        shifted[:, :, 0] += vy * ry + eps
        shifted[:, :, 1] += vx * rx + eps
        shifted.clamp_(-CLAMP, CLAMP)
        rel = coord - sample_nearest(centres, shifted)
        rel[:, :, 0] *= H
        rel[:, :, 1] *= W
        yield shifted, rel


def lr_units(cell: torch.Tensor, lr_hw: tuple[int, int]) -> torch.Tensor:
    """Cells (B, Q, 2) in [-1, 1] units -> in LR-pixel units (rows times H, columns times W)."""
    out = cell.clone()
    out[:, :, 0] *= lr_hw[0]
    out[:, :, 1] *= lr_hw[1]
    return out


def nearest_code(coord: torch.Tensor, n_lr: int, shift: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis with ``n_lr`` codes: for coordinates ``coord`` (any shape, float32) and an
    ensemble shift of ``shift`` in {-1, 0, +1} code widths, the index of the nearest code and the
    offset ``(coord - centre) * n_lr`` to it, in code widths.

    The shift/eps/clamp order and the index rule (the grid_sample nearest kernel itself, run on a
    look-up table) are the reference's, so indices agree with ``sample_nearest`` bit for bit; the
    row rule never depends on the column and vice versa, which makes render plans separable.
    """
    shifted = coord.clone()
    shifted += shift * (2 / n_lr / 2) + eps
    shifted.clamp_(-CLAMP, CLAMP)
    lut = torch.arange(n_lr, device=coord.device, dtype=torch.float32).view(1, 1, 1, n_lr)
    flat = shifted.reshape(-1)
    grid = torch.stack([flat, torch.zeros_like(flat)], -1).view(1, 1, -1, 2)
    idx = F.grid_sample(lut, grid, mode="nearest", align_corners=False).view(coord.shape).long()
    rel = coord - axis_centres(n_lr, device=coord.device)[idx]
    rel *= n_lr
    return idx, rel


def area(rel: torch.Tensor) -> torch.Tensor:
    """Blend area of a code from the offset (..., 2) to it: |dy * dx| + 1e-9."""
    return torch.abs(rel[..., 0] * rel[..., 1]) + AREA_EPS


def area_blend(preds: Sequence[torch.Tensor], areas: Sequence[torch.Tensor], local_ensemble: bool) -> torch.Tensor:
    """Blend the per-code predictions (..., out): with the local ensemble, code t is weighted by the
    area of its diagonal partner 3 - t over the total area. The summation order is fixed, so every
    route that calls this blends bit for bit alike."""
    total = areas[0]
    for a in areas[1:]:
        total = total + a
    weights = list(areas)[::-1] if local_ensemble else list(areas)
    out = preds[0] * (weights[0] / total).unsqueeze(-1)
    for pred, w in zip(preds[1:], weights[1:], strict=True):
        out = out + pred * (w / total).unsqueeze(-1)
    return out
