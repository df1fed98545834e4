"""LMF's modulated render MLP (He & Jin, CVPR 2024, "Latent Modulated Function"), shared by LM-LIIF and LM-LTE.

The render MLP is narrow (``width`` 16) with ``depth`` hidden layers, all of width ``width``. Its
hidden layers are modulated by the modulations of the query's latent code, which a hypernet computes
once per LR pixel: scales ``s_l`` and shifts ``t_l`` (``width`` each, layer l = 0 .. depth - 1),

    h <- ReLU((W_l h + b_l) * (1 + s_l) + t_l),        then the output layer W_out h + b_out.

The hypernet's output lays out all scales first (``s_0 .. s_{depth-1}``), then all shifts, then the
latent code(s) that replace the feature map as the render MLP's input (``mod_input``).

The fast routes fold each code's modulations into per-code *tables* once per LR pixel:
``S_l = 1 + s_l`` and ``T_l = b_l * (1 + s_l) + t_l``, so that a modulated layer is
``ReLU((W_l h) * S_l + T_l)``: a plain GEMM with the shared weights, then one scale-and-shift per row
(or one per group of queries that share a code). ``run_tables`` runs the layers from such tables.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from liif.models import validate
from liif.models.decoder import ImplicitDecoder
from liif.models.mlp import MLP

if TYPE_CHECKING:
    from liif.models.spec import ModelSpec


class LMFDecoder(ImplicitDecoder):
    """What both LMF families have at the seam: the official demo's clipped cell, maps that depend on the
    render's cell (the hypernet sees it), and their own decode of the gathered rows (no plain tail)."""

    cell_clip_scale: float | None

    def render_cell(self, out_hw: tuple[int, int], lr_hw: tuple[int, int]) -> tuple[float, float]:
        return clipped_cell(out_hw, lr_hw, self.cell_clip_scale)

    @property
    def has_tail(self) -> bool:
        return False

    @property
    def maps_see_cell(self) -> bool:
        return True


def widths(hidden: Sequence[int] | None) -> tuple[int, int]:
    """(width, depth) of a render MLP's ``hidden`` list: LMF's modulations need equal widths."""
    if not hidden:
        raise ValueError("an LMF model needs a render MLP (hidden must be a non-empty list)")
    if len(set(hidden)) != 1:
        raise ValueError(f"an LMF render MLP has hidden layers of one width (modulated per layer), got {list(hidden)}")
    return int(hidden[0]), len(hidden)


def check_spec(spec: ModelSpec) -> None:
    """The spec fields both LMF families have: a render MLP of one width, a hypernet, the cell clip."""
    widths(spec.hidden)
    if not validate.widths("hypernet_hidden", spec.hypernet_hidden):
        raise ValueError("an LMF model needs a hypernet (hypernet_hidden must be a non-empty list)")
    if spec.cell_clip_scale is not None:
        validate.number("cell_clip_scale", spec.cell_clip_scale, 1e-6)


def linears(mlp: MLP) -> list[nn.Linear]:
    return [m for m in mlp.layers if isinstance(m, nn.Linear)]


def chain(layers: Sequence[nn.Linear], h: torch.Tensor) -> torch.Tensor:
    """Plain Linear layers with ReLU between them, in the dtype of ``h``."""
    for k, lin in enumerate(layers):
        h = F.linear(h, lin.weight.to(h.dtype), lin.bias.to(h.dtype))
        if k < len(layers) - 1:
            h = h.relu_()
    return h


def modulated(mlp: MLP, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
    """The official op structure: input (..., in) and the code's modulations (..., 2 * depth * width),
    scales first -> prediction (..., out)."""
    layers = linears(mlp)
    depth = len(layers) - 1
    width = layers[0].out_features
    h = x
    for layer, lin in enumerate(layers[:-1]):
        h = lin(h)
        h = h * (mod[..., layer * width:(layer + 1) * width] + 1.0)
        h = h + mod[..., (depth + layer) * width:(depth + layer + 1) * width]
        h = torch.relu(h)
    return layers[-1](h)


def tables(mod: torch.Tensor, biases: Sequence[torch.Tensor], first: int, depth: int, width: int) -> torch.Tensor:
    """Per-code tables of hidden layers ``first .. depth - 1`` from modulations (..., >= 2 * depth * width):
    (..., 2 * width * (depth - first)) laid out [S_first, T_first, S_first+1, T_first+1, ...]."""
    parts = mod.split(width, dim=-1)  # one split, not a slice per layer: its backward is one concatenation
    out = []
    for layer in range(first, depth):
        scale = parts[layer] + 1.0
        out += [scale, torch.addcmul(parts[depth + layer], scale, biases[layer - first].to(mod.dtype))]
    return torch.cat(out, dim=-1)


def run_tables(layers: Sequence[nn.Linear], h: torch.Tensor, tabs: torch.Tensor) -> torch.Tensor:
    """The modulated hidden layers ``layers[:-1]`` from per-row tables (N, 2 * width * len(layers[:-1])), then
    the output layer: ``h`` (N, width), in the dtype of ``h`` -> (N, out)."""
    parts = tabs.split(h.shape[-1], dim=1)  # one split (training: one concatenation backward, not a zero-filled
    for k, lin in enumerate(layers[:-1]):   # full-width gradient per slice)
        h = h @ lin.weight.to(h.dtype).t()
        h = torch.addcmul(parts[2 * k + 1], h, parts[2 * k]).relu_()
    last = layers[-1]
    return F.linear(h, last.weight.to(h.dtype), last.bias.to(h.dtype))


def outer_sum(terms: torch.Tensor, a: int) -> torch.Tensor:
    """``terms`` (C, a + b, G): row terms then column terms of G groups -> (C, a * b, G) with entry i * b + j
    = row term i + column term j (one pass, contiguous along the group axis)."""
    C, ab, G = terms.shape
    b = ab - a
    out = torch.empty(C, a, b, G, dtype=terms.dtype, device=terms.device)
    torch.add(terms[:, :a, None], terms[:, None, a:], out=out)
    return out.view(C, a * b, G)


def run_groups(layers: Sequence[nn.Linear], h: torch.Tensor, tabs: torch.Tensor) -> torch.Tensor:
    """``run_tables`` for queries grouped by code, laid out (channel, query, group): ``h`` (width, n, G) for
    G groups of n queries, the groups' tables (2 * width * L, G) -> (out, n, G). Each layer is one GEMM over
    all n * G queries (M = width, N = n * G: a wide, efficient GEMM), then the group's scale and shift in
    one pass (contiguous along the group axis, broadcast over the queries) and the ReLU, in place."""
    width, n, G = h.shape
    x = h.reshape(width, n * G)
    spare = torch.empty_like(x)
    for k, lin in enumerate(layers[:-1]):
        y = torch.mm(lin.weight.to(x.dtype), x, out=spare)
        spare = x
        x = y
        view = y.view(width, n, G)
        torch.addcmul(tabs[(2 * k + 1) * width:(2 * k + 2) * width, None, :], view,
                      tabs[2 * k * width:(2 * k + 1) * width, None, :], out=view).relu_()
    last = layers[-1]
    return torch.addmm(last.bias.to(x.dtype)[:, None], last.weight.to(x.dtype), x).view(-1, n, G)


def clipped_cell(out_hw: tuple[int, int], lr_hw: tuple[int, int], clip: float | None) -> tuple[float, float]:
    """The official demo's cell: (2 / H, 2 / W) times ``max(scale / clip, 1)``, scale = H / h."""
    cy, cx = 2.0 / out_hw[0], 2.0 / out_hw[1]
    if clip is None:
        return cy, cx
    factor = max(out_hw[0] / lr_hw[0] / clip, 1.0)
    return cy * factor, cx * factor


def modulated_macs(width: int, depth: int, out_dim: int) -> int:
    """Multiply-adds of the hidden layers 1 .. depth - 1 and the output layer (scales counted too)."""
    return (depth - 1) * (width * width + width) + width * out_dim
