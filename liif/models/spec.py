"""A model spec: everything needed to rebuild a model of any registered decoder family, serialisable
as a small JSON dict. The family (``liif.models.family``) declares its own fields and builds the model."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from liif.models import edsr, family, rdn
from liif.models.decoder import ImplicitDecoder
from liif.models.edsr import EDSR
from liif.models.rdn import RDN
from liif.models.variant import Variant

ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {**edsr.VARIANTS, **rdn.VARIANTS}
ENCODERS = tuple(ENCODER_DEFAULTS)
HALF = (0.5, 0.5, 0.5)
MEANS = ("inp_mean", "inp_std", "out_mean", "out_std")
VARIANTS: Mapping[str, Variant] = family.VariantView()  # every registered family's variants, by name


class _Unset:
    """``hidden`` left out: the family's default (None is a value: no MLP)."""


UNSET = _Unset()


@dataclass(init=False)
class ModelSpec:
    """Fields shared by every family, then the family's own in ``own`` (in the family's order, filled
    with its defaults), given as keywords and read or written as attributes like the shared ones.

    A field that is neither shared nor the family's own is a ValueError; a spec without ``method`` is
    of the default family; ``hidden`` left out is the family's default MLP."""

    method: str
    encoder: str
    encoder_args: dict[str, Any]
    hidden: list[int] | None
    own: dict[str, Any]
    inp_mean: tuple[float, float, float]
    inp_std: tuple[float, float, float]
    out_mean: tuple[float, float, float]
    out_std: tuple[float, float, float]

    def __init__(self, method: str | None = None, encoder: str = "edsr-baseline",
                 encoder_args: dict[str, Any] | None = None, hidden: list[int] | None | _Unset = UNSET, *,
                 inp_mean: tuple[float, float, float] = HALF, inp_std: tuple[float, float, float] = HALF,
                 out_mean: tuple[float, float, float] = HALF, out_std: tuple[float, float, float] = HALF,
                 **own: Any) -> None:
        fam = family.default() if method is None else family.get(method)
        extra = [k for k in own if k not in fam.spec_fields]
        if extra:
            raise ValueError(f"unknown model spec keys for method {fam.name!r}: {sorted(extra)} "
                             f"(its own: {', '.join(fam.spec_fields) or 'none'})")
        self.method, self.encoder = fam.name, encoder
        self.encoder_args = {} if encoder_args is None else encoder_args
        self.hidden = copy.deepcopy(fam.hidden) if isinstance(hidden, _Unset) else hidden
        self.own = {k: own[k] if k in own else copy.deepcopy(v) for k, v in fam.spec_fields.items()}
        self.inp_mean, self.inp_std, self.out_mean, self.out_std = inp_mean, inp_std, out_mean, out_std

    def __getattr__(self, name: str) -> Any:  # only called for names that are not plain attributes
        own = self.__dict__.get("own")
        if own is None or name not in own:
            raise AttributeError(f"{type(self).__name__} of method {self.__dict__.get('method')!r} "
                                 f"has no field {name!r}")
        return own[name]

    def __setattr__(self, name: str, value: Any) -> None:
        own = self.__dict__.get("own")
        if own is not None and name in own:
            own[name] = value
        else:
            super().__setattr__(name, value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: shared fields, the family's own after ``hidden``, normalisation as lists."""
        d = {"method": self.method, "encoder": self.encoder, "encoder_args": self.encoder_args,
             "hidden": self.hidden, **self.own, **{k: list(getattr(self, k)) for k in MEANS}}
        return copy.deepcopy(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = set(family.SHARED_FIELDS).union(*(f.spec_fields for f in family.families()))
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model spec keys: {sorted(unknown)}")
        d = dict(d)
        for k in MEANS:
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
    """The model of ``spec``: its encoder, then its family's decoder, with the spec's normalisation."""
    model = family.get(spec.method).build(build_encoder(spec.encoder, spec.encoder_args), spec)
    model.set_normalization(spec.inp_mean, spec.inp_std, spec.out_mean, spec.out_std)
    return model
