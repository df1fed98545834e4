"""The LIIF decoder with the official op structure: the readable reference (spec section 2).

For a query at coordinate ``coord`` (row, col in [-1, 1]) with output-pixel size ``cell``:
  1. optionally unfold each latent code with its 3x3 neighbours (zero padded);
  2. for each of the four nearest latent codes (ensemble shifts of one LR pixel, eps 1e-6,
     clamped inside the image), take the code and its centre by nearest sampling;
  3. run the MLP on [code, offset to the code centre in LR-pixel units, cell in LR-pixel units];
  4. blend the four predictions with the area of the diagonally opposite rectangle.
``liif.render`` computes the same function faster; this file is the yardstick.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from liif.coords import make_coord
from liif.models.mlp import MLP

ENSEMBLE_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))  # (row, col); vx outer, vy inner
EPS_SHIFT = 1e-6
CLAMP = 1 - 1e-6


class LIIF(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        hidden: Sequence[int] | None = (256, 256, 256, 256),
        local_ensemble: bool = True,
        feat_unfold: bool = True,
        cell_decode: bool = True,
        out_dim: int = 3,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.local_ensemble, self.feat_unfold, self.cell_decode = local_ensemble, feat_unfold, cell_decode
        feat_dim: int = encoder.out_dim  # type: ignore[assignment]
        self.in_dim = feat_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
        self.imnet = MLP(self.in_dim, out_dim, hidden) if hidden is not None else None
        # Input/output normalisation (set from the model spec; not part of the state dict).
        for name in ("inp_mean", "inp_std", "out_mean", "out_std"):
            self.register_buffer(name, torch.full((1, 3, 1, 1), 0.5), persistent=False)

    def set_normalization(self, inp_mean: Sequence[float], inp_std: Sequence[float],
                          out_mean: Sequence[float], out_std: Sequence[float]) -> None:
        for name, v in (("inp_mean", inp_mean), ("inp_std", inp_std), ("out_mean", out_mean), ("out_std", out_std)):
            getattr(self, name).copy_(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> encoder input."""
        return (img - self.inp_mean) / self.inp_std

    def denormalize(self, pred: torch.Tensor) -> torch.Tensor:
        """Decoder output (..., 3) -> RGB (unclamped)."""
        return pred * self.out_std.view(3) + self.out_mean.view(3)

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Normalised input (B, 3, h, w), coord/cell (B, Q, 2) -> normalised prediction (B, Q, 3)."""
        return self.query(self.encoder(inp), coord, cell)

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        if self.imnet is None:
            return sample_nearest(feat, coord)
        B, C, H, W = feat.shape
        if self.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(B, C * 9, H, W)
        shifts, eps = (ENSEMBLE_SHIFTS, EPS_SHIFT) if self.local_ensemble else (((0, 0),), 0.0)
        rx, ry = 2 / H / 2, 2 / W / 2
        feat_coord = make_coord((H, W), flatten=False, device=feat.device).permute(2, 0, 1)
        feat_coord = feat_coord.unsqueeze(0).expand(B, 2, H, W)

        preds, areas = [], []
        for vx, vy in shifts:
            shifted = coord.clone()
            shifted[:, :, 0] += vx * rx + eps
            shifted[:, :, 1] += vy * ry + eps
            shifted.clamp_(-CLAMP, CLAMP)
            q_feat = sample_nearest(feat, shifted)
            q_coord = sample_nearest(feat_coord, shifted)
            rel_coord = coord - q_coord
            rel_coord[:, :, 0] *= H
            rel_coord[:, :, 1] *= W
            parts = [q_feat, rel_coord]
            if self.cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= H
                rel_cell[:, :, 1] *= W
                parts.append(rel_cell)
            preds.append(self.imnet(torch.cat(parts, dim=-1)))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)

        return area_blend(preds, areas, self.local_ensemble)


def area_blend(preds: Sequence[torch.Tensor], areas: Sequence[torch.Tensor], local_ensemble: bool) -> torch.Tensor:
    """Blend the per-code predictions (..., 3): with the local ensemble, code t is weighted by the
    area of its diagonal partner 3 - t over the total area. The summation order is fixed (the
    reference's), so every rendering route that calls this blends bit for bit alike."""
    total = areas[0]
    for a in areas[1:]:
        total = total + a
    weights = list(areas)[::-1] if local_ensemble else list(areas)
    out = preds[0] * (weights[0] / total).unsqueeze(-1)
    for pred, area in zip(preds[1:], weights[1:]):
        out = out + pred * (area / total).unsqueeze(-1)
    return out


def sample_nearest(feat: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Nearest lookup of (B, C, H, W) at (B, Q, 2) (row, col) coordinates -> (B, Q, C)."""
    grid = coord.flip(-1).unsqueeze(1)
    out = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1)
