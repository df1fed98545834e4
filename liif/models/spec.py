"""A model spec: everything needed to rebuild a LIIF model, serialisable as a small JSON dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from liif.models.edsr import EDSR
from liif.models.liif import LIIF
from liif.models.rdn import RDN

ENCODERS = ("edsr-baseline", "edsr", "rdn")
HALF = (0.5, 0.5, 0.5)


@dataclass
class ModelSpec:
    encoder: str = "edsr-baseline"
    encoder_args: dict[str, Any] = field(default_factory=dict)
    hidden: list[int] | None = field(default_factory=lambda: [256, 256, 256, 256])
    local_ensemble: bool = True
    feat_unfold: bool = True
    cell_decode: bool = True
    inp_mean: tuple[float, float, float] = HALF
    inp_std: tuple[float, float, float] = HALF
    out_mean: tuple[float, float, float] = HALF
    out_std: tuple[float, float, float] = HALF

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("inp_mean", "inp_std", "out_mean", "out_std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model spec keys: {sorted(unknown)}")
        d = dict(d)
        for k in ("inp_mean", "inp_std", "out_mean", "out_std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        spec = cls(**d)
        if spec.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {spec.encoder!r}; expected one of {ENCODERS}")
        return spec


def build_encoder(name: str, args: dict[str, Any]) -> nn.Module:
    args = {"no_upsampling": True, **args}
    if name == "edsr-baseline":
        return EDSR(**{"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0, **args})
    if name == "edsr":
        return EDSR(**{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **args})
    if name == "rdn":
        return RDN(**args)
    raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODERS}")


def build(spec: ModelSpec) -> LIIF:
    model = LIIF(build_encoder(spec.encoder, spec.encoder_args), spec.hidden,
                 spec.local_ensemble, spec.feat_unfold, spec.cell_decode)
    model.set_normalization(spec.inp_mean, spec.inp_std, spec.out_mean, spec.out_std)
    return model
