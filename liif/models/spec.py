"""A model spec: everything needed to rebuild a model of any registered decoder family, serialisable
as a small JSON dict. The family (``liif.models.family``) declares its own fields and builds the model.

Every value is checked when a spec is made (``liif.models.validate``; the family checks its own fields
through its ``check`` hook), and ``build`` first builds the model on the ``meta`` device (shapes, no
data) to refuse one above ``MAX_PARAMS`` before anything is allocated; :func:`shapes` gives those
shapes, so a checkpoint is compared with its spec before the model is built for real."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from liif.models import edsr, family, rdn, validate
from liif.models.decoder import ImplicitDecoder
from liif.models.edsr import EDSR
from liif.models.rdn import RDN
from liif.models.variant import Variant

ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {**edsr.VARIANTS, **rdn.VARIANTS}
ENCODERS = tuple(ENCODER_DEFAULTS)
ENCODER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    **{name: edsr.check_args for name in edsr.VARIANTS}, **{name: rdn.check_args for name in rdn.VARIANTS}}
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

    A field that is neither shared nor the family's own is a ValueError, as is a value of the wrong type
    or out of range; a spec without ``method`` is of the default family; ``hidden`` left out is the
    family's default MLP."""

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
        fam = family.default() if method is None else family.get(validate.text("method", method))
        extra = [k for k in own if k not in fam.spec_fields]
        if extra:
            raise ValueError(f"unknown model spec keys for method {fam.name!r}: {sorted(extra)} "
                             f"(its own: {', '.join(fam.spec_fields) or 'none'})")
        if validate.text("encoder", encoder) not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {ENCODERS}")
        self.method, self.encoder = fam.name, encoder
        self.encoder_args = {} if encoder_args is None else validate.mapping("encoder_args", encoder_args)
        ENCODER_CHECKS[encoder](self.encoder_args)
        self.hidden = copy.deepcopy(fam.hidden) if isinstance(hidden, _Unset) else \
            None if hidden is None else validate.widths("hidden", hidden)
        self.own = {k: own[k] if k in own else copy.deepcopy(d) for k, d in fam.spec_fields.items()}
        self.inp_mean, self.out_mean = validate.triple("inp_mean", inp_mean), validate.triple("out_mean", out_mean)
        self.inp_std = validate.triple("inp_std", inp_std, std=True)
        self.out_std = validate.triple("out_std", out_std, std=True)
        if fam.check is not None:
            fam.check(self)

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
        """The spec of a JSON dict (``to_dict``'s form); ValueError naming the first bad field."""
        d = validate.mapping("a model spec", d)
        known = set(family.SHARED_FIELDS).union(*(f.spec_fields for f in family.families()))
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model spec keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> ModelSpec:
        """The spec of a named variant (``VARIANTS``), with optional field overrides."""
        if name not in VARIANTS:
            raise ValueError(f"unknown model variant {name!r}; expected one of {', '.join(VARIANTS)}")
        return cls.from_dict({**VARIANTS[name].spec, **overrides})


def encoder_kwargs(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The encoder's constructor arguments: the spec's ``encoder_args`` over the variant's defaults."""
    if name not in ENCODER_DEFAULTS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODERS}")
    ENCODER_CHECKS[name](args)
    return {"no_upsampling": True, **ENCODER_DEFAULTS[name], **args}


def build_encoder(name: str, args: dict[str, Any]) -> nn.Module:
    kwargs = encoder_kwargs(name, args)
    return RDN(**kwargs) if name == "rdn" else EDSR(**kwargs)


def _build(spec: ModelSpec) -> ImplicitDecoder:
    model = family.get(spec.method).build(build_encoder(spec.encoder, spec.encoder_args), spec)
    model.set_normalization(spec.inp_mean, spec.inp_std, spec.out_mean, spec.out_std)
    return model


def meta_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The state dict's tensor shapes of the model of ``spec``, found by building it on the ``meta``
    device (no data is allocated), whatever its size; see :func:`shapes`."""
    with torch.device("meta"):
        return {k: tuple(t.shape) for k, t in _build(spec).state_dict().items()}


def parameters(sizes: Mapping[str, tuple[int, ...]]) -> int:
    """The number of values in tensors of these shapes."""
    return sum(math.prod(s) for s in sizes.values())


def shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """:func:`meta_shapes`, or ValueError when the model would have more than ``MAX_PARAMS`` parameters."""
    sizes = meta_shapes(spec)
    n = parameters(sizes)
    if n > validate.MAX_PARAMS:
        raise ValueError(f"the model of this spec would have {n:,} parameters ({4 * n / 2**30:.1f} GiB in fp32); "
                         f"at most {validate.MAX_PARAMS:,}")
    return sizes


def build(spec: ModelSpec) -> ImplicitDecoder:
    """The model of ``spec``: its encoder, then its family's decoder, with the spec's normalisation.
    A model above ``MAX_PARAMS`` parameters is refused (ValueError) before it is allocated."""
    shapes(spec)
    return _build(spec)
