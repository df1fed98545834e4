"""The decoder seam: what a local implicit image function (LIIF, LTE, ...) implements once.

A method is an encoder plus a decoder that predicts a value at a continuous coordinate from the
nearest latent codes of the LR feature map (the local ensemble of ``liif.geometry``). Every method
subclasses :class:`ImplicitDecoder` and provides

``query``         the readable reference: the official op structure, feature map + coordinates +
                  cells -> prediction (the yardstick every fast route is tested against);
``lr_maps``       what the method precomputes once per LR pixel, feat (B, C, h, w) and the cell of
                  each sample -> (B, D, h, w) (LIIF: the MLP's first layer as a 3x3 conv; LTE:
                  amplitude and frequency maps; LMF: its hypernet's modulations, which see the cell);
``first_hidden``  how gathered rows of those maps, the offsets to the codes and the cell become the
                  input of ``tail`` (LIIF: offset term + ReLU; LTE: the sin/cos basis times amplitude);
``tail``          the Linear layers that follow (ReLU between them), run as plain GEMMs;
``decode_rows``   gathered rows, offsets and cells -> predictions: ``first_hidden`` then ``tail``, or the
                  method's own decode when ``has_tail`` is False (LMF: layers modulated per code);
``decode_groups`` the same for queries grouped by code on a separable grid (each code's row once, its
                  queries' offsets as row and column offsets): what per-code work a method can share
                  (LMF's modulations broadcast over the group instead of being gathered per query);
``global_term``   a term added after the blend, if the method has one (LTE: bilinear input);
``render_cell``   the cell a render at a given scale decodes with (LTE clips it beyond x4).

``fast_query`` below composes those pieces for training (autograd, autocast); the fast renderer
(``liif.render``) and the ONNX export (``liif.export.onnx``) compose the same pieces, so nothing
method-specific lives anywhere else.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from liif.geometry import area, area_blend, ensemble_shifts, nearest_code


class ImplicitDecoder(nn.Module):
    """Base class of the decoder families: normalisation and the seam's contract."""

    method: str = ""
    encoder: nn.Module
    local_ensemble: bool = True
    inp_mean: torch.Tensor  # normalisation buffers, registered in __init__
    inp_std: torch.Tensor
    out_mean: torch.Tensor
    out_std: torch.Tensor

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        # Input/output normalisation (set from the model spec; not part of the state dict).
        for name in ("inp_mean", "inp_std", "out_mean", "out_std"):
            self.register_buffer(name, torch.full((1, 3, 1, 1), 0.5), persistent=False)

    # -- normalisation --------------------------------------------------------------------------
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

    # -- the reference route --------------------------------------------------------------------
    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Normalised input (B, 3, h, w), coord/cell (B, Q, 2) -> normalised prediction (B, Q, 3)."""
        return self.predict(inp, self.encoder(inp), coord, cell)

    def predict(self, inp: torch.Tensor, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The reference decode of ``feat`` plus the global term of the normalised input ``inp``."""
        out = self.query(feat, coord, cell)
        extra = self.global_term(inp, coord)
        return out if extra is None else out + extra

    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """The official op structure: feat (B, C, h, w), coord/cell (B, Q, 2) -> (B, Q, out)."""
        raise NotImplementedError

    # -- the seam of the fast routes ------------------------------------------------------------
    @property
    def map_channels(self) -> int:
        """D, the channels of ``lr_maps`` (bytes per LR pixel for the memory budget)."""
        raise NotImplementedError

    @property
    def mlp_width(self) -> int:
        """The widest activation of ``first_hidden``/``tail`` (bytes per query for the memory budget)."""
        return max([self.tail[0].in_features] + [lin.out_features for lin in self.tail[:-1]])

    @property
    def tail(self) -> Sequence[nn.Linear]:
        """The Linear layers after ``first_hidden``: ReLU after each but the last."""
        raise NotImplementedError

    @property
    def has_tail(self) -> bool:
        """Whether ``first_hidden`` + ``tail`` (plain GEMMs) decode this method; if not, ``decode_rows`` does."""
        return True

    @property
    def maps_see_cell(self) -> bool:
        """Whether ``lr_maps`` depends on the cell (renderers pass it only then, so backends written for
        methods without it keep working)."""
        return False

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        """feat (B, C, h, w) and the cell of each sample (B, 2) in LR-pixel units of the whole image (a
        render has one cell) -> the method's per-LR-pixel maps (B, D, h, w). Methods whose maps do not
        depend on the cell ignore it."""
        raise NotImplementedError

    def first_hidden(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """Gathered map rows (N, D) (any float dtype), offsets to the codes (N, 2) and cells (N, 2), both
        in LR-pixel units -> the input of ``tail`` (N, K) in the dtype of ``rows``. ``rows`` may be
        updated in place: callers pass a fresh gather (``index_select``), never a view of the maps."""
        raise NotImplementedError

    def decode_rows(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """Gathered map rows (N, D), offsets (N, 2) and cells (N, 2) -> predictions (N, out) in the dtype of
        ``rows`` (``rows`` may be updated in place, as in ``first_hidden``)."""
        return run_tail(self.tail, self.first_hidden(rows, rel, rel_cell))

    def decode_groups(self, codes: torch.Tensor, rel_y: torch.Tensor, rel_x: torch.Tensor,
                      rel_cell: torch.Tensor) -> torch.Tensor:
        """Queries grouped by code on a separable grid: map rows of G codes (G, D), the row offsets (G, a)
        and column offsets (G, b) of each code's a x b queries, the cell (2,) -> predictions (G, a, b, out)
        in the dtype of ``codes``. Equals ``decode_rows`` on each query; by default it is computed so."""
        G, a, b = codes.shape[0], rel_y.shape[1], rel_x.shape[1]
        rel = torch.stack([rel_y[:, :, None].expand(G, a, b), rel_x[:, None, :].expand(G, a, b)], dim=-1)
        rows = codes.repeat_interleave(a * b, dim=0)
        out = self.decode_rows(rows, rel.reshape(-1, 2), rel_cell.view(1, 2).expand(G * a * b, 2))
        return out.view(G, a, b, -1)

    def global_term(self, inp: torch.Tensor, coord: torch.Tensor) -> torch.Tensor | None:
        """A term added after the blend, from the normalised input (B, 3, h, w) at (B, Q, 2); None if none."""
        return None

    @property
    def has_global_term(self) -> bool:
        return False

    @property
    def has_fast_route(self) -> bool:
        """Whether the seam methods exist for this model (a LIIF without MLP only samples codes)."""
        return True

    def render_cell(self, out_hw: tuple[int, int], lr_hw: tuple[int, int]) -> tuple[float, float]:
        """The cell (2/H, 2/W) a render of an h x w input at H x W decodes with."""
        return 2.0 / out_hw[0], 2.0 / out_hw[1]

    def macs_per_lr_pixel(self) -> int:
        """Multiply-adds per LR pixel of ``lr_maps`` (for throughput figures)."""
        raise NotImplementedError

    def macs_per_code(self, folded: bool) -> int:
        """Multiply-adds per query and ensemble code of the decoder (for throughput figures)."""
        return sum(lin.in_features * lin.out_features for lin in self.tail)


def run_tail(layers: Sequence[nn.Linear], h: torch.Tensor) -> torch.Tensor:
    """The ``tail`` Linear layers with ReLU between them."""
    for lin in layers[:-1]:
        h = torch.relu(lin(h))
    return layers[-1](h)


def fast_query(model: ImplicitDecoder, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """``model.query`` through the seam: maps once per LR pixel, one gather per query and code.

    Same contract and, up to float rounding, same values and gradients as the reference; used for
    training (differentiable, autocast-friendly). feat (B, C, H, W), coord/cell (B, Q, 2) -> (B, Q, out).
    """
    B, _, H, W = feat.shape
    Q = coord.shape[1]
    lr_size = torch.tensor([H, W], dtype=torch.float32, device=cell.device)
    maps = model.lr_maps(feat, cell[:, 0].float() * lr_size)  # (B, D, H, W); one cell per sample
    table = maps.permute(0, 2, 3, 1).reshape(B * H * W, -1)
    shifts, eps = ensemble_shifts(model.local_ensemble)
    base = (torch.arange(B, device=feat.device) * (H * W)).view(B, 1)
    idx, rels = [], []
    for vy, vx in shifts:
        iy, ry = nearest_code(coord[..., 0], H, vy, eps)
        ix, rx = nearest_code(coord[..., 1], W, vx, eps)
        idx.append((base + iy * W + ix).reshape(-1))
        rels.append(torch.stack([ry, rx], dim=-1))
    rel = torch.stack(rels)  # (T, B, Q, 2)
    rel_cell = (cell.float() * lr_size).expand(len(shifts), B, Q, 2)
    rows = table.index_select(0, torch.cat(idx))
    preds = model.decode_rows(rows, rel.reshape(-1, 2), rel_cell.reshape(-1, 2))
    preds = preds.float().view(len(shifts), B, Q, -1)  # the blend runs in fp32
    return area_blend(preds.unbind(0), area(rel).unbind(0), model.local_ensemble)


def fast_forward(model: ImplicitDecoder, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """``model(inp, coord, cell)`` with ``fast_query``: normalised input -> normalised prediction."""
    out = fast_query(model, model.encoder(inp), coord, cell)
    extra = model.global_term(inp, coord)
    return out if extra is None else out + extra.float()
