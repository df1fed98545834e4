"""LM-LIIF: LIIF with a latent modulated function (He & Jin, CVPR 2024, "Latent Modulated Function"; official
code HeZongyao/LMF, Apache-2.0), as one implementation of the seam.

The wide MLP moves to the LR grid: once per LR pixel a **hypernet** (MLP ``hypernet_hidden``, official
[208]) maps the 3x3-unfolded code and the cell ``[U(p) (9C), rel_cell (2)]`` to modulations ``M``: the
scales and shifts of the render MLP's hidden layers (``liif.models.lmmlp``) and a 16-wide latent
code ``Z`` that replaces the feature map. Per query and ensemble code (LIIF's local ensemble), the
narrow **render MLP** (``hidden``, official 6 x 16) runs on ``[Z, offset, rel_cell]`` with its hidden
layers modulated by the code's ``M``; the four predictions are blended with LIIF's area weights.
Beyond x4 the cell is clipped (multiplied by ``max(scale / cell_clip_scale, 1)``), as the official
demo does; the hypernet sees the clipped cell too.

Fast routes: the hypernet's first layer on the unfolded code is a 3x3 convolution (its cell term a
per-sample bias), and ``lr_maps`` folds each code's modulations with the render MLP's layer 0 into
per-code tables: ``A = (W_z Z + W_c rel_cell + b_0) * (1 + s_0) + t_0`` and
``B = diag(1 + s_0) W_rel``, so that layer 0 of a query is ``ReLU(A + B @ offset)``, then
``S_l, T_l = t_l + b_l * S_l`` for the other hidden layers. All but A are affine in the modulations, so
they come out of the hypernet's last layer folded with them (``folded_last``: one GEMM per LR pixel),
and A = T_0 + pre * S_0 is one product more. A render (and a training sample) has one
cell, as in the official code, which gives the hypernet the cell of the first queries.
Checkpoint keys (official): ``encoder.*``, ``hypernet.layers.*``, ``imnet.layers.*``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from liif.geometry import area, area_blend, lr_units, reference_codes, sample_nearest
from liif.models import lmmlp, validate
from liif.models.family import Family, official_hidden, register
from liif.models.mlp import MLP
from liif.models.variant import Pretrained, Variant

if TYPE_CHECKING:
    from liif.models.spec import ModelSpec

# The official weights: files committed to the official repository at a pinned commit (lmf-spec.md), verified
# by their git blob ids, which any clone of that commit lists (``git ls-tree``).
LMF_URL = "https://raw.githubusercontent.com/HeZongyao/LMF/17e356edb6b792b293d70450d64fad4e39e1b2e4"
LMF_LICENSE = "Apache-2.0 (HeZongyao/LMF; weights by the LMF authors)"
VARIANTS = [
    Variant("lm-liif", "official EDSR-baseline LM-LIIF (LMF, CVPR 2024; DIV2K, x1-x4 training scales)",
            {"method": "lmliif", "encoder": "edsr-baseline"},
            Pretrained(url=f"{LMF_URL}/save/pretrained_models/edsr-b_lm-liif.pth", verify="git-blob",
                       digest="b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4", license=LMF_LICENSE)),
]


class LMLIIF(lmmlp.LMFDecoder):
    method = "lmliif"

    def __init__(self, encoder: nn.Module, hidden: Sequence[int] = (16,) * 6, hypernet_hidden: Sequence[int] = (208,),
                 cell_clip_scale: float | None = 4.0, out_dim: int = 3) -> None:
        super().__init__(encoder)
        self.width, self.depth = lmmlp.widths(hidden)
        self.feat_dim: int = encoder.out_dim  # type: ignore[assignment]
        self.mod_dim = 2 * self.width * self.depth
        self.cell_clip_scale = cell_clip_scale
        self.hypernet = MLP(self.feat_dim * 9 + 2, self.mod_dim + self.width, hypernet_hidden)
        self.imnet = MLP(self.width + 4, out_dim, list(hidden))

    # -- reference ------------------------------------------------------------------------------
    def modulations(self, feat: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """The hypernet on every LR pixel: feat (B, C, h, w), one cell per sample (B, 2) -> M (B, D, h, w)."""
        B, C, H, W = feat.shape
        unfolded = F.unfold(feat, 3, padding=1).view(B, C * 9, H, W).permute(0, 2, 3, 1)
        x = torch.cat([unfolded, rel_cell[:, None, None, :].expand(B, H, W, 2)], dim=-1)
        return self.hypernet(x).permute(0, 3, 1, 2)

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        H, W = feat.shape[-2:]
        rel_cell = lr_units(cell, (H, W))
        mod = self.modulations(feat, rel_cell[:, 0])
        code = mod[:, self.mod_dim:]
        preds, areas = [], []
        for shifted, rel in reference_codes(coord, (H, W), local_ensemble=True):
            x = torch.cat([sample_nearest(code, shifted), rel, rel_cell], dim=-1)
            preds.append(lmmlp.modulated(self.imnet, x, sample_nearest(mod[:, :self.mod_dim], shifted)))
            areas.append(area(rel))
        return area_blend(preds, areas, local_ensemble=True)

    # -- the seam (render_cell, has_tail, maps_see_cell: lmmlp.LMFDecoder) ----------------------------
    @property
    def map_channels(self) -> int:
        return 3 * self.width + 2 * self.width * (self.depth - 1)

    @property
    def mlp_width(self) -> int:
        return self.map_channels  # the gathered table rows are the widest per-query arrays

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        """Per-code tables (B, map_channels, h, w): [A, B_row, B_col, S_1, T_1, ..., S_5, T_5]."""
        if rel_cell is None:
            raise ValueError("LM-LIIF's maps need the render's cell")
        B, C = feat.shape[0], self.feat_dim
        first, *rest = lmmlp.linears(self.hypernet)
        dt = feat.dtype
        w = first.weight[:, :C * 9].reshape(-1, C, 3, 3).to(dt)
        bias = torch.addmm(first.bias, rel_cell.float(), first.weight[:, C * 9:].t())  # (B, hidden)
        if B == 1:
            hid = F.conv2d(feat, w, bias[0].to(dt), padding=1)
        else:
            hid = F.conv2d(feat, w, None, padding=1) + bias.to(dt)[:, :, None, None]
        hid = hid.relu_().permute(0, 2, 3, 1)  # channels-last views when feat is channels-last
        *mid, last = rest
        for lin in mid:
            hid = F.linear(hid, lin.weight.to(dt), lin.bias.to(dt)).relu_()
        # The tables are affine in the modulations except A (a product of two affine parts): one GEMM of
        # the hypernet's last layer folded with the tables gives [T_0, B_row, B_col, S_1, T_1, ..., pre, S_0],
        # then A = T_0 + pre * S_0 in the first columns.
        weight, bias = self.folded_last(last, rel_cell)
        if B == 1:
            out = F.linear(hid, weight.to(dt), bias[0].to(dt))
        else:
            out = F.linear(hid, weight.to(dt)) + bias.to(dt)[:, None, None, :]
        wd, n = self.width, self.map_channels
        a = torch.addcmul(out[..., :wd], out[..., n:n + wd], out[..., n + wd:])
        return torch.cat([a, out[..., wd:n]], dim=-1).permute(0, 3, 1, 2)  # one copy, as maps are read anyway

    def folded_last(self, last: nn.Linear, rel_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hypernet's last layer (modulations s_l, t_l and the code Z) composed with the affine maps from
        the modulations to the tables: weight (map_channels + 2 * width, hidden) and one bias per sample
        (B, map_channels + 2 * width) for the outputs [T_0, B_row, B_col, S_1, T_1, ..., S_5, T_5, pre, S_0],
        where S_l = 1 + s_l, T_l = t_l + b_l * S_l (T_0: t_0), B_row/B_col = S_0 * W_rel, and
        pre = W_z Z + W_c rel_cell + b_0."""
        wd, dp = self.width, self.depth
        w, b = last.weight.float(), last.bias.float()
        layers = lmmlp.linears(self.imnet)
        w0, b0 = layers[0].weight.float(), layers[0].bias.float()

        def rows(k: int) -> slice:  # the hypernet's outputs: s_0..s_{depth-1}, t_0..t_{depth-1}, Z
            return slice(k * wd, (k + 1) * wd)

        s_w = [w[rows(k)] for k in range(dp)]
        s_b = [b[rows(k)] + 1.0 for k in range(dp)]  # S_l = 1 + s_l
        ws = [w[rows(dp)], w0[:, wd, None] * s_w[0], w0[:, wd + 1, None] * s_w[0]]
        bs = [b[rows(dp)], w0[:, wd] * s_b[0], w0[:, wd + 1] * s_b[0]]
        for k, lin in enumerate(layers[1:-1], start=1):
            lb = lin.bias.float()
            ws += [s_w[k], w[rows(dp + k)] + lb[:, None] * s_w[k]]
            bs += [s_b[k], b[rows(dp + k)] + lb * s_b[k]]
        wz = w0[:, :wd]
        ws += [wz @ w[rows(2 * dp)], s_w[0]]
        fixed = torch.cat(bs + [wz @ b[rows(2 * dp)] + b0, s_b[0]])
        cell = torch.zeros(rel_cell.shape[0], fixed.shape[0], device=fixed.device)
        cell[:, self.map_channels:self.map_channels + wd] = rel_cell.float() @ w0[:, wd + 2:].t()
        return torch.cat(ws), fixed + cell

    def decode_rows(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        wd = self.width
        r = rel.to(rows.dtype)
        a, b_row, b_col, tabs = rows.split([wd, wd, wd, rows.shape[1] - 3 * wd], dim=1)
        h = torch.addcmul(a, b_row, r[:, :1])
        h = torch.addcmul(h, b_col, r[:, 1:]).relu_()
        return lmmlp.run_tables(lmmlp.linears(self.imnet)[1:], h, tabs)

    def decode_groups(self, codes: torch.Tensor, rel_y: torch.Tensor, rel_x: torch.Tensor,
                      rel_cell: torch.Tensor) -> torch.Tensor:
        wd = self.width
        G, a, b = codes.shape[0], rel_y.shape[1], rel_x.shape[1]
        ct = codes.t().contiguous()  # (D, G): the group axis innermost, the layout of every step below
        terms = torch.empty(wd, a + b, G, dtype=codes.dtype, device=codes.device)
        torch.addcmul(ct[:wd, None], ct[wd:2 * wd, None], rel_y.t().to(codes.dtype)[None], out=terms[:, :a])
        torch.mul(ct[2 * wd:3 * wd, None], rel_x.t().to(codes.dtype)[None], out=terms[:, a:])
        h = lmmlp.outer_sum(terms, a).relu_()  # layer 0, A + B_row rel_y + B_col rel_x: (wd, a * b, G)
        out = lmmlp.run_groups(lmmlp.linears(self.imnet)[1:], h, ct[3 * wd:])
        return out.view(-1, a, b, G).permute(3, 1, 2, 0)

    def macs_per_lr_pixel(self) -> int:
        hyper = sum(lin.in_features * lin.out_features for lin in lmmlp.linears(self.hypernet))
        return hyper - 2 * self.hypernet.hidden[0] + self.width * self.width  # the cell is a bias; A's Z term

    def macs_per_code(self, folded: bool) -> int:
        first = self.imnet.layers[0]
        assert isinstance(first, nn.Linear)
        layer0 = 2 * self.width if folded else first.in_features * first.out_features
        return layer0 + lmmlp.modulated_macs(self.width, self.depth, self.imnet.out_dim)


FIELDS = {"hypernet_hidden": [208], "cell_clip_scale": 4.0}
REQUIRED = {"local_ensemble": True, "feat_unfold": True, "cell_decode": True, "mod_input": True}


def _build(encoder: nn.Module, spec: ModelSpec) -> LMLIIF:
    return LMLIIF(encoder, spec.hidden or (), spec.hypernet_hidden, spec.cell_clip_scale)


def official_lmf(name: str, args: dict[str, Any], switches: dict[str, bool]) -> dict[str, Any]:
    """The render MLP (``imnet_spec``: lmmlp) and the hypernet (``hypernet_spec``: mlp) of HeZongyao/LMF's
    ``args``; ValueError for the variants we do not build (the configurations of the official models only)."""
    imnet, hyper = args.get("imnet_spec") or {}, args.get("hypernet_spec") or {}
    if imnet.get("name") != "lmmlp" or hyper.get("name") != "mlp":
        raise ValueError(f"an official {name} model needs imnet_spec 'lmmlp' and hypernet_spec 'mlp'")
    i_args = imnet.get("args", {})
    off = [k for k, v in switches.items() if bool(args.get(k, False if k == "mod_input" else v)) != v]
    off += [k for k in ("mod_scale", "mod_shift") if not i_args.get(k, True)]
    if off:
        raise ValueError(f"official {name} models with {', '.join(f'{k}: false' for k in off)} are not supported")
    depth = validate.integer("imnet_spec.args.hidden_depth", i_args.get("hidden_depth"), 1, validate.MAX_LAYERS)
    hidden = [i_args.get("hidden_dim", 16)] * depth
    return {"hidden": hidden, "hypernet_hidden": official_hidden({"imnet_spec": hyper}), "cell_clip_scale": 4.0}


def _from_official(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return official_lmf(name, args, REQUIRED)


FAMILY = register(Family("lmliif", LMLIIF, FIELDS, hidden=[16] * 6, build=_build, variants=tuple(VARIANTS),
                         official_names=("lmliif",), from_official=_from_official, check=lmmlp.check_spec))
