"""LM-LTE: LTE with a latent modulated function (He & Jin, CVPR 2024; official code HeZongyao/LMF,
Apache-2.0), as one implementation of the seam.

Once per LR pixel: LTE's amplitude ``A = conv3x3(F)`` and frequency ``Q = conv3x3(F)`` maps
(``hidden_dim`` channels each); the two components of each frequency pair are summed and the phase of
the cell added, ``t_k = Q[2k] + Q[2k+1] + phase(rel_cell)_k``; the hypernet (``hypernet_hidden``,
official [288]) maps ``A * [cos(pi t), sin(pi t)]`` to the modulations of the render MLP's hidden
layers (``liif.models.lmmlp``) plus a latent amplitude ``Za`` and frequency ``Zq`` (16 each).
Per query and ensemble code: ``u_k = Zq[2k] * rel_row + Zq[2k+1] * rel_col + imphase(rel_cell)_k``,
the render MLP (``hidden``, official 8 x 16, every hidden layer modulated) runs on
``Za * [cos(pi u), sin(pi u)]``; LIIF's area blend, then LTE's bilinear sample of the normalised input.
Beyond x4 the cell is clipped as the official demo does (the hypernet sees the clipped cell too).

Fast routes: ``lr_maps`` runs A and the summed frequencies as one convolution and folds the
modulations into per-code tables (``lmmlp.tables``) next to ``Za`` and ``Zq`` (pairs de-interleaved).
Checkpoint keys (official): ``encoder.*``, ``coef.*``, ``freq.*``, ``phase.weight``, ``hypernet.layers.*``,
``imphase.weight``, ``imnet.layers.*``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from liif.geometry import area, area_blend, lr_units, reference_codes, sample_bilinear, sample_nearest
from liif.models import lmmlp, validate
from liif.models.family import Family, register
from liif.models.lmliif import LMF_LICENSE, LMF_URL, official_lmf
from liif.models.mlp import MLP
from liif.models.variant import Pretrained, Variant

if TYPE_CHECKING:
    from liif.models.spec import ModelSpec

VARIANTS = [
    Variant("lm-lte", "official EDSR-baseline LM-LTE (LMF, CVPR 2024; DIV2K, x1-x4 training scales)",
            {"method": "lmlte", "encoder": "edsr-baseline"},
            Pretrained(url=f"{LMF_URL}/save/pretrained_models/edsr-b_lm-lte.pth", verify="git-blob",
                       digest="de7b1f5d91b83568f0306f88171aeecfe268ffb2", license=LMF_LICENSE)),
]


def basis(t: torch.Tensor) -> torch.Tensor:
    """[cos(pi t), sin(pi t)], cosines first."""
    t = t * math.pi
    return torch.cat([torch.cos(t), torch.sin(t)], dim=-1)


class LMLTE(lmmlp.LMFDecoder):
    method = "lmlte"

    def __init__(self, encoder: nn.Module, hidden: Sequence[int] = (16,) * 8, hidden_dim: int = 128,
                 hypernet_hidden: Sequence[int] = (288,), cell_clip_scale: float | None = 4.0,
                 out_dim: int = 3) -> None:
        super().__init__(encoder)
        self.width, self.depth = lmmlp.widths(hidden)
        if hidden_dim % 2 or self.width % 2:
            raise ValueError(f"LM-LTE's hidden_dim and render width must be even, got {hidden_dim}, {self.width}")
        feat_dim: int = encoder.out_dim  # type: ignore[assignment]
        self.hidden_dim, self.cell_clip_scale = hidden_dim, cell_clip_scale
        self.mod_dim = 2 * self.width * self.depth
        self.coef = nn.Conv2d(feat_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(feat_dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.hypernet = MLP(hidden_dim, self.mod_dim + 2 * self.width, hypernet_hidden)
        self.imphase = nn.Linear(2, self.width // 2, bias=False)
        self.imnet = MLP(self.width, out_dim, list(hidden))

    # -- reference ------------------------------------------------------------------------------
    def modulations(self, feat: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """The hypernet on every LR pixel: feat (B, C, h, w), one cell per sample (B, 2) -> M (B, D, h, w)."""
        coef = self.coef(feat).permute(0, 2, 3, 1)
        freq = self.freq(feat).permute(0, 2, 3, 1)
        t = freq[..., 0::2] + freq[..., 1::2] + self.phase(rel_cell)[:, None, None, :]
        return self.hypernet(coef * basis(t)).permute(0, 3, 1, 2)

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        B, _, H, W = feat.shape
        Q = coord.shape[1]
        rel_cell = lr_units(cell, (H, W))
        mod = self.modulations(feat, rel_cell[:, 0])
        amp, freq = mod[:, self.mod_dim:self.mod_dim + self.width], mod[:, self.mod_dim + self.width:]
        preds, areas = [], []
        for shifted, rel in reference_codes(coord, (H, W), local_ensemble=True):
            pairs = sample_nearest(freq, shifted).view(B, Q, -1, 2)  # (Zq[2k], Zq[2k+1])
            u = (pairs * rel.unsqueeze(-2)).sum(-1) + self.imphase(rel_cell)
            x = sample_nearest(amp, shifted) * basis(u)
            preds.append(lmmlp.modulated(self.imnet, x, sample_nearest(mod[:, :self.mod_dim], shifted)))
            areas.append(area(rel))
        return area_blend(preds, areas, local_ensemble=True)

    def global_term(self, inp: torch.Tensor, coord: torch.Tensor) -> torch.Tensor | None:
        return sample_bilinear(inp, coord)

    @property
    def has_global_term(self) -> bool:
        return True

    # -- the seam (render_cell, has_tail, maps_see_cell: lmmlp.LMFDecoder) ----------------------------
    @property
    def map_channels(self) -> int:
        return 2 * self.width + 2 * self.width * self.depth

    @property
    def mlp_width(self) -> int:
        return self.map_channels

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        """Per-code tables (B, map_channels, h, w): [Za, Zq[0::2], Zq[1::2], S_0, T_0, ..., S_7, T_7]."""
        if rel_cell is None:
            raise ValueError("LM-LTE's maps need the render's cell")
        d, dt = self.hidden_dim, feat.dtype
        assert self.coef.bias is not None and self.freq.bias is not None
        wq, bq = self.freq.weight, self.freq.bias
        # A and the summed frequency pairs as one convolution (a sum of convolutions is one convolution)
        w = torch.cat([self.coef.weight, wq[0::2] + wq[1::2]]).to(dt)
        b = torch.cat([self.coef.bias, bq[0::2] + bq[1::2]]).to(dt)
        maps = F.conv2d(feat, w, b, padding=1).permute(0, 2, 3, 1)  # (B, h, w, 3d/2), channels-last views
        with torch.autocast(feat.device.type, enabled=False):  # the phase and its cos/sin in fp32, as LTE
            t = maps[..., d:].float() + self.phase(rel_cell.float())[:, None, None, :]
            x = (maps[..., :d].float() * basis(t)).to(dt)
        mod = lmmlp.chain(lmmlp.linears(self.hypernet), x)
        latent = mod[..., self.mod_dim:]
        zq = latent[..., self.width:]
        tabs = lmmlp.tables(mod, [lin.bias for lin in lmmlp.linears(self.imnet)[:-1]], 0, self.depth, self.width)
        return torch.cat([latent[..., :self.width], zq[..., 0::2], zq[..., 1::2], tabs], dim=-1).permute(0, 3, 1, 2)

    def decode_rows(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        wd, half = self.width, self.width // 2
        with torch.autocast(rows.device.type, enabled=False):  # the phase and the basis in fp32, as LTE
            r = rel.float()
            za, zq_y, zq_x, tabs = rows.split([wd, half, half, rows.shape[1] - 2 * wd], dim=1)
            u = zq_y.float() * r[:, :1] + zq_x.float() * r[:, 1:]
            u = u + rel_cell.float() @ self.imphase.weight.float().t()
            x = (za.float() * basis(u)).to(rows.dtype)
        return lmmlp.run_tables(lmmlp.linears(self.imnet), x, tabs)

    def decode_groups(self, codes: torch.Tensor, rel_y: torch.Tensor, rel_x: torch.Tensor,
                      rel_cell: torch.Tensor) -> torch.Tensor:
        wd, half = self.width, self.width // 2
        G, a, b = codes.shape[0], rel_y.shape[1], rel_x.shape[1]
        ct = codes.t().contiguous()  # (D, G): the group axis innermost, the layout of every step below
        with torch.autocast(codes.device.type, enabled=False):  # the phase and the basis in fp32, as LTE
            zq = ct[wd:2 * wd].float()
            phase = self.imphase.weight.float() @ rel_cell.float().view(2)  # (half,)
            terms = torch.empty(half, a + b, G, device=codes.device)
            torch.addcmul(phase[:, None, None], zq[:half, None], rel_y.t().float()[None], out=terms[:, :a])
            torch.mul(zq[half:, None], rel_x.t().float()[None], out=terms[:, a:])
            u = lmmlp.outer_sum(terms, a).mul_(math.pi)  # (half, a * b, G)
            x = torch.empty(wd, a * b, G, device=codes.device)
            torch.cos(u, out=x[:half])
            torch.sin(u, out=x[half:])
            x = x.mul_(ct[:wd, None].float()).to(codes.dtype)
        out = lmmlp.run_groups(lmmlp.linears(self.imnet), x, ct[2 * wd:])
        return out.view(-1, a, b, G).permute(3, 1, 2, 0)

    def macs_per_lr_pixel(self) -> int:
        conv = self.coef.weight.numel() + self.freq.weight.numel() // 2  # the summed pairs: one conv
        return conv + sum(lin.in_features * lin.out_features for lin in lmmlp.linears(self.hypernet))

    def macs_per_code(self, folded: bool) -> int:
        half = self.width // 2
        basis_macs = 2 * half + 2 * half + self.width  # offset dot products, phase, Za * basis
        return basis_macs + self.width * self.width + lmmlp.modulated_macs(self.width, self.depth, self.imnet.out_dim)


FIELDS = {"hidden_dim": 128, "hypernet_hidden": [288], "cell_clip_scale": 4.0}
REQUIRED = {"local_ensemble": True, "cell_decode": True, "mod_input": True}


def _check(spec: ModelSpec) -> None:
    lmmlp.check_spec(spec)
    if validate.integer("hidden_dim", spec.hidden_dim, 2, validate.MAX_WIDTH) % 2 or (spec.hidden or [0])[0] % 2:
        raise ValueError(f"LM-LTE's hidden_dim and render width must be even, got {spec.hidden_dim} and "
                         f"{(spec.hidden or [0])[0]}")


def _build(encoder: nn.Module, spec: ModelSpec) -> LMLTE:
    return LMLTE(encoder, spec.hidden or (), spec.hidden_dim, spec.hypernet_hidden, spec.cell_clip_scale)


def _from_official(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {**official_lmf(name, args, REQUIRED), "hidden_dim": args.get("hidden_dim", 128)}


FAMILY = register(Family("lmlte", LMLTE, FIELDS, hidden=[16] * 8, build=_build, variants=tuple(VARIANTS),
                         official_names=("lmlte",), from_official=_from_official, check=_check))
