"""A toy decoder family in one file, for ``test_a_family_in_one_file.py``: what a new family writes.

The decoder is LIIF without the 3x3 unfold: for each of the four ensemble codes, the MLP sees the code
(C channels), the offset to it and, with ``cell_term``, the cell (LR-pixel units). The first Linear's
code weights are a 1x1 convolution of the feature map (``lr_maps``), and ``first_hidden`` adds the
offset/cell term and applies the ReLU. The family is declared in ``FAMILY`` and registered by the test.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from liif.geometry import area, area_blend, lr_units, reference_codes, sample_nearest
from liif.models.decoder import ImplicitDecoder, run_tail
from liif.models.family import Family, official_hidden
from liif.models.spec import ModelSpec
from liif.models.variant import Variant


class Toy(ImplicitDecoder):
    method = "toy"

    def __init__(self, encoder: nn.Module, hidden: Sequence[int], cell_term: bool = True, out_dim: int = 3) -> None:
        super().__init__(encoder)
        if not hidden:
            raise ValueError("a toy model needs at least one hidden layer")
        self.cell_term = cell_term
        self.feat_dim: int = encoder.out_dim  # type: ignore[assignment]
        self.first = nn.Linear(self.feat_dim + (4 if cell_term else 2), hidden[0])
        widths = [*hidden, out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    # -- reference: the MLP on [code, offset, cell] per ensemble code, area blend ----------------
    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        hw = (feat.shape[-2], feat.shape[-1])
        rel_cell = lr_units(cell, hw)
        preds, areas = [], []
        for shifted, rel in reference_codes(coord, hw, local_ensemble=True):
            x = torch.cat([sample_nearest(feat, shifted), rel] + ([rel_cell] if self.cell_term else []), dim=-1)
            preds.append(run_tail(self.tail, torch.relu(self.first(x))))
            areas.append(area(rel))
        return area_blend(preds, areas, local_ensemble=True)

    # -- the seam --------------------------------------------------------------------------------
    @property
    def tail(self) -> Sequence[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    @property
    def map_channels(self) -> int:
        return self.first.out_features

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        w = self.first.weight[:, :self.feat_dim, None, None]
        return F.conv2d(feat, w.to(feat.dtype), self.first.bias.to(feat.dtype))

    def first_hidden(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([rel, rel_cell], -1) if self.cell_term else rel
        with torch.autocast(rows.device.type, enabled=False):  # the offset term in fp32, as LIIF's
            offset = inputs.float() @ self.first.weight[:, self.feat_dim:].t().float()
            return (rows.float() + offset).relu().to(rows.dtype)

    def macs_per_lr_pixel(self) -> int:
        return self.feat_dim * self.first.out_features

    def macs_per_code(self, folded: bool) -> int:
        k = self.first.in_features - (self.feat_dim if folded else 0)
        return k * self.first.out_features + super().macs_per_code(folded)


def _build(encoder: nn.Module, spec: ModelSpec) -> Toy:
    if not spec.hidden:
        raise ValueError("a toy model needs an MLP (hidden must be a non-empty list)")
    return Toy(encoder, spec.hidden, cell_term=spec.cell_term)


def _from_official(name: str, args: dict[str, Any]) -> dict[str, Any]:
    hidden = official_hidden(args)
    if not hidden:
        raise ValueError("an official toy model without imnet_spec")
    return {"hidden": hidden, "cell_term": bool(args.get("cell_term", True))}


FAMILY = Family(
    "toy", Toy, {"cell_term": True}, hidden=[32, 32], build=_build,
    variants=(Variant("edsr-tiny-toy", "a toy decoder on a one-block EDSR (tests only)",
                      {"method": "toy", "encoder": "edsr-baseline", "encoder_args": {"n_resblocks": 1, "n_feats": 8},
                       "hidden": [16]},
                      weights_note="no weights anywhere: train your own"),),
    official_names=("toy",), from_official=_from_official,
)
