"""A differentiable LIIF query with the layer-0 fold, for training.

The MLP's first Linear applied to a 3x3-unfolded latent code equals a 3x3 convolution of the
feature map with that Linear's weights reshaped to (out, C, 3, 3). So instead of unfolding every
code to 9C values and sampling them four times per query (the official op structure), we compute
``Z = conv3x3(feat)`` once per LR pixel and, per query and ensemble code, gather one row of Z and add
``W_rel @ rel_coord + W_cell @ rel_cell + bias``. The rest of the MLP, the nearest-code rule
(``liif.render.nearest_code``) and the area blend are the reference's, so the result equals
``LIIF.query`` up to float rounding, in the forward pass and in the gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from liif.models.liif import ENSEMBLE_SHIFTS, EPS_SHIFT, LIIF, area_blend
from liif.render import nearest_code


def folded_query(model: LIIF, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Same contract as ``model.query``: feat (B, C, H, W), coord/cell (B, Q, 2) -> (B, Q, out)."""
    if model.imnet is None:
        return model.query(feat, coord, cell)
    B, C, H, W = feat.shape
    Q = coord.shape[1]
    layers = model.imnet.layers
    first = layers[0]
    assert isinstance(first, torch.nn.Linear)
    nf = C * 9 if model.feat_unfold else C
    k = 3 if model.feat_unfold else 1
    w = first.weight
    w_feat = w[:, :nf].reshape(w.shape[0], C, k, k)
    z = F.conv2d(feat, w_feat.to(feat.dtype), padding=k // 2)  # (B, D, H, W)
    z = z.permute(0, 2, 3, 1).reshape(B * H * W, -1)

    shifts, eps = (ENSEMBLE_SHIFTS, EPS_SHIFT) if model.local_ensemble else (((0, 0),), 0.0)
    base = (torch.arange(B, device=feat.device) * (H * W)).view(B, 1)
    idx, rels = [], []
    for vx, vy in shifts:
        iy, ry = nearest_code(coord[..., 0], H, vx, eps)
        ix, rx = nearest_code(coord[..., 1], W, vy, eps)
        idx.append((base + iy * W + ix).reshape(-1))
        rels.append(torch.stack([ry, rx], dim=-1))
    rel = torch.stack(rels)  # (T, B, Q, 2)
    h = z.index_select(0, torch.cat(idx)).view(len(shifts), B, Q, -1)
    # The coordinate and cell terms are tiny GEMMs (K = 2); keep them in fp32 under autocast so the
    # offsets keep their precision, then join the (possibly bf16) gathered codes.
    with torch.autocast(feat.device.type, enabled=False):
        lin = rel @ w[:, nf:nf + 2].float().t() + first.bias.float()
        if model.cell_decode:
            rel_cell = cell.float() * torch.tensor([H, W], dtype=torch.float32, device=cell.device)
            lin = lin + (rel_cell @ w[:, nf + 2:nf + 4].float().t()).unsqueeze(0)
    h = h + lin.to(h.dtype)
    preds = layers[1:](h).float()  # (T, B, Q, out); the blend runs in fp32

    areas = torch.abs(rel[..., 0] * rel[..., 1]) + 1e-9  # (T, B, Q)
    return area_blend(preds.unbind(0), areas.unbind(0), model.local_ensemble)


def folded_forward(model: LIIF, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """``model(inp, coord, cell)`` with the folded query: normalised input -> normalised prediction."""
    return folded_query(model, model.encoder(inp), coord, cell)
