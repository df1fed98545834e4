"""LTE, the Local Texture Estimator (Lee & Jin, CVPR 2022), as one implementation of the seam.

LTE keeps LIIF's encoder, local ensemble and area blend and changes
what the MLP sees. From the feature map it computes, once per LR pixel, an amplitude map ``A`` and
a frequency map ``Q`` (3x3 convolutions to ``hidden_dim`` channels each). For a query and one of
its four ensemble codes, with ``rel`` the offset to the code (LR-pixel units, row first) and
``rel_cell`` the cell in LR-pixel units:

    t_k = Q[2k] * rel_row + Q[2k+1] * rel_col + (P @ rel_cell)_k        k < hidden_dim / 2
    x   = A * [cos(pi t), sin(pi t)]                                    (cosines first)

and the MLP maps x to RGB. The four predictions are blended with LIIF's area weights, then the
bilinear sample of the normalised input at the query (border padding) is added.

``global_term: false`` (our ablation switch, not in the official code) leaves the bilinear term out.
At inference beyond the training scales the cell is clipped: it is multiplied by
``max(scale / cell_clip_scale, 1)`` (``render_cell``), as the official test scripts do.
Checkpoint keys (official): ``encoder.*``, ``coef.*`` (A), ``freq.*`` (Q), ``phase.weight`` (P),
``imnet.layers.*``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from liif.geometry import area, area_blend, lr_units, reference_codes, sample_bilinear, sample_nearest
from liif.models import validate
from liif.models.decoder import ImplicitDecoder
from liif.models.family import Family, official_hidden, register
from liif.models.mlp import MLP
from liif.models.variant import Variant

if TYPE_CHECKING:
    from liif.models.spec import ModelSpec

VARIANTS = [
    Variant("edsr-baseline-lte", "EDSR-baseline-LTE (the official train_edsr-baseline-lte.yaml)",
            {"method": "lte", "encoder": "edsr-baseline"},
            weights_note="official weights: Google Drive links in jaewon-lee-b/lte"),
    Variant("rdn-lte", "RDN-LTE (the paper's RDN encoder, config B)", {"method": "lte", "encoder": "rdn"},
            weights_note="official weights: Google Drive links in jaewon-lee-b/lte"),
]


class LTE(ImplicitDecoder):
    method = "lte"

    def __init__(self, encoder: nn.Module, hidden: Sequence[int] = (256, 256, 256), hidden_dim: int = 256,
                 out_dim: int = 3, cell_clip_scale: float | None = 4.0, global_term: bool = True) -> None:
        super().__init__(encoder)
        if hidden_dim % 2:
            raise ValueError(f"LTE's hidden_dim must be even, got {hidden_dim}")
        feat_dim: int = encoder.out_dim  # type: ignore[assignment]
        self.hidden_dim, self.cell_clip_scale = hidden_dim, cell_clip_scale
        self.use_global_term = global_term  # an ablation switch (ours): the official LTE always adds it
        self.coef = nn.Conv2d(feat_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(feat_dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.imnet = MLP(hidden_dim, out_dim, hidden)

    # -- reference ------------------------------------------------------------------------------
    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        B, _, H, W = feat.shape
        Q = coord.shape[1]
        coef, freq = self.coef(feat), self.freq(feat)
        rel_cell = lr_units(cell, (H, W))
        preds, areas = [], []
        for shifted, rel in reference_codes(coord, (H, W), local_ensemble=True):
            q_coef = sample_nearest(coef, shifted)
            q_freq = sample_nearest(freq, shifted)
            # frequency pairs (Q[2k], Q[2k+1]) dotted with the offset, plus the phase of the cell
            pairs = q_freq.view(B, Q, -1, 2)
            t = (pairs * rel.unsqueeze(-2)).sum(-1) + self.phase(rel_cell.view(B * Q, 2)).view(B, Q, -1)
            basis = torch.cat([torch.cos(math.pi * t), torch.sin(math.pi * t)], dim=-1)
            preds.append(self.imnet(q_coef * basis))
            areas.append(area(rel))
        return area_blend(preds, areas, local_ensemble=True)

    def global_term(self, inp: torch.Tensor, coord: torch.Tensor) -> torch.Tensor | None:
        return sample_bilinear(inp, coord) if self.use_global_term else None

    @property
    def has_global_term(self) -> bool:
        return self.use_global_term

    def render_cell(self, out_hw: tuple[int, int], lr_hw: tuple[int, int]) -> tuple[float, float]:
        cy, cx = super().render_cell(out_hw, lr_hw)
        if self.cell_clip_scale is None:
            return cy, cx
        factor = max(out_hw[0] / lr_hw[0] / self.cell_clip_scale, 1.0)
        return cy * factor, cx * factor

    # -- the seam -------------------------------------------------------------------------------
    @property
    def tail(self) -> Sequence[nn.Linear]:
        return [m for m in self.imnet.layers if isinstance(m, nn.Linear)]

    @property
    def map_channels(self) -> int:
        return 2 * self.hidden_dim

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        """[A, Q[0::2], Q[1::2]] stacked: (B, 2 * hidden_dim, h, w), as one convolution. The frequency
        pairs are stored de-interleaved, so a query reads each half as one contiguous slice."""
        assert self.coef.bias is not None and self.freq.bias is not None
        wq, bq = self.freq.weight, self.freq.bias
        w = torch.cat([self.coef.weight, wq[0::2], wq[1::2]]).to(feat.dtype)
        b = torch.cat([self.coef.bias, bq[0::2], bq[1::2]]).to(feat.dtype)
        return F.conv2d(feat, w, b, padding=1)

    def first_hidden(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        d, half = self.hidden_dim, self.hidden_dim // 2
        # The phase argument and the basis run in fp32 whatever the rows' precision: |t| grows with the
        # frequencies, and bf16's 8-bit mantissa would turn that into phase noise.
        with torch.autocast(rows.device.type, enabled=False):
            q_row, q_col = rows[:, d:d + half].float(), rows[:, d + half:].float()  # see lr_maps
            t = q_row * rel[:, :1].float() + q_col * rel[:, 1:].float()
            t = t + rel_cell.float() @ self.phase.weight.float().t()
            t = t * math.pi
            basis = torch.cat([torch.cos(t), torch.sin(t)], dim=-1)
            return (rows[:, :d].float() * basis).to(rows.dtype)

    def macs_per_lr_pixel(self) -> int:
        return self.coef.weight.numel() + self.freq.weight.numel()

    def macs_per_code(self, folded: bool) -> int:
        half = self.hidden_dim // 2
        basis = 2 * half + 2 * half + self.hidden_dim  # frequency dot products, phase, A * basis
        return basis + super().macs_per_code(folded)  # the same per code on either route


def _build(encoder: nn.Module, spec: ModelSpec) -> LTE:
    if spec.hidden is None:
        raise ValueError("an LTE model needs an MLP (hidden must be a list)")
    return LTE(encoder, spec.hidden, spec.hidden_dim, cell_clip_scale=spec.cell_clip_scale,
               global_term=spec.global_term)


def _check(spec: ModelSpec) -> None:
    if spec.hidden is None:
        raise ValueError("an LTE model needs an MLP (hidden must be a list)")
    if validate.integer("hidden_dim", spec.hidden_dim, 2, validate.MAX_WIDTH) % 2:
        raise ValueError(f"LTE's hidden_dim must be even, got {spec.hidden_dim}")
    if spec.cell_clip_scale is not None:
        validate.number("cell_clip_scale", spec.cell_clip_scale, 1e-6)
    validate.boolean("global_term", spec.global_term)


def _from_official(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """jaewon-lee-b/lte's ``args``: the MLP and ``hidden_dim``; the cell is clipped beyond x4, as the
    official test scripts do."""
    hidden = official_hidden(args)
    if hidden is None:
        raise ValueError("an official LTE model without imnet_spec")
    return {"hidden": hidden, "hidden_dim": args.get("hidden_dim", 256), "cell_clip_scale": 4.0}


# The defaults a spec gets when it leaves them out: the official configs' values.
FAMILY = register(Family("lte", LTE, {"hidden_dim": 256, "cell_clip_scale": 4.0, "global_term": True},
                         hidden=[256, 256, 256], build=_build, variants=tuple(VARIANTS), official_names=("lte",),
                         from_official=_from_official, check=_check))
