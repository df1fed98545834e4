"""A model spec: everything needed to rebuild a model (LIIF or LTE), serialisable as a small JSON dict."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from liif.models import edsr, liif, lte, rdn
from liif.models.decoder import ImplicitDecoder
from liif.models.edsr import EDSR
from liif.models.liif import LIIF
from liif.models.lte import LTE
from liif.models.rdn import RDN
from liif.models.variant import Variant

ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {**edsr.VARIANTS, **rdn.VARIANTS}
ENCODERS = tuple(ENCODER_DEFAULTS)
METHODS = ("liif", "lte")
HALF = (0.5, 0.5, 0.5)
# What a spec dict that names a method but leaves these keys out gets (each method file's DEFAULTS).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {"liif": liif.DEFAULTS, "lte": lte.DEFAULTS}
VARIANTS: dict[str, Variant] = {v.name: v for v in [*liif.VARIANTS, *lte.VARIANTS]}

OWN_FIELDS = {"liif": ("local_ensemble", "feat_unfold", "cell_decode"),
              "lte": ("hidden_dim", "cell_clip_scale", "global_term")}


@dataclass
class ModelSpec:
    """Fields shared by every method, then each method's own (ignored by the others):
    LIIF: ``local_ensemble``, ``feat_unfold``, ``cell_decode``; LTE: ``hidden_dim``, ``cell_clip_scale``,
    ``global_term`` (an ablation switch: False leaves out LTE's bilinear term)."""

    method: str = "liif"
    encoder: str = "edsr-baseline"
    encoder_args: dict[str, Any] = field(default_factory=dict)
    hidden: list[int] | None = field(default_factory=lambda: [256, 256, 256, 256])
    local_ensemble: bool = True
    feat_unfold: bool = True
    cell_decode: bool = True
    hidden_dim: int = 256
    cell_clip_scale: float | None = None
    global_term: bool = True
    inp_mean: tuple[float, float, float] = HALF
    inp_std: tuple[float, float, float] = HALF
    out_mean: tuple[float, float, float] = HALF
    out_std: tuple[float, float, float] = HALF

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in OWN_FIELDS["lte" if self.method == "liif" else "liif"]:  # the other method's fields
            d.pop(k)
        for k in ("inp_mean", "inp_std", "out_mean", "out_std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model spec keys: {sorted(unknown)}")
        d = dict(d)
        method = d.get("method", "liif")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        d = {**copy.deepcopy(METHOD_DEFAULTS[method]), **d}
        for k in ("inp_mean", "inp_std", "out_mean", "out_std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        spec = cls(**d)
        if spec.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {spec.encoder!r}; expected one of {ENCODERS}")
        return spec


    @classmethod
    def variant(cls, name: str, **overrides: Any) -> ModelSpec:
        """The spec of a named variant (``VARIANTS``), with optional field overrides."""
        if name not in VARIANTS:
            raise ValueError(f"unknown model variant {name!r}; expected one of {', '.join(VARIANTS)}")
        return cls.from_dict({**VARIANTS[name].spec, **overrides})


def build_encoder(name: str, args: dict[str, Any]) -> nn.Module:
    if name not in ENCODER_DEFAULTS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODERS}")
    args = {"no_upsampling": True, **ENCODER_DEFAULTS[name], **args}
    return RDN(**args) if name == "rdn" else EDSR(**args)


def build(spec: ModelSpec) -> ImplicitDecoder:
    encoder = build_encoder(spec.encoder, spec.encoder_args)
    model: ImplicitDecoder
    if spec.method == "liif":
        model = LIIF(encoder, spec.hidden, spec.local_ensemble, spec.feat_unfold, spec.cell_decode)
    elif spec.method == "lte":
        if spec.hidden is None:
            raise ValueError("an LTE model needs an MLP (hidden must be a list)")
        model = LTE(encoder, spec.hidden, spec.hidden_dim, cell_clip_scale=spec.cell_clip_scale,
                    global_term=spec.global_term)
    else:
        raise ValueError(f"unknown method {spec.method!r}; expected one of {METHODS}")
    model.set_normalization(spec.inp_mean, spec.inp_std, spec.out_mean, spec.out_std)
    return model
