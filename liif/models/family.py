"""The registry of decoder families: what one family (LIIF, LTE, ...) declares, in one file.

A family file implements the seam (``liif.models.decoder.ImplicitDecoder``) and ends with a
:class:`Family` declaration passed to :func:`register`. Everything else (model specs, ``build``, the
official checkpoint reader, ``liif weights list``) reads the registry, so no other module names a family.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from liif.models.decoder import ImplicitDecoder
from liif.models.variant import Variant

if TYPE_CHECKING:
    from liif.models.spec import ModelSpec

SHARED_FIELDS = ("method", "encoder", "encoder_args", "hidden", "inp_mean", "inp_std", "out_mean", "out_std")


@dataclass(frozen=True)
class Family:
    name: str  # the spec's ``method`` value
    model: type[ImplicitDecoder]
    spec_fields: Mapping[str, Any]  # the family's own spec fields with their defaults, in to_dict order
    hidden: list[int] | None  # the spec's ``hidden`` (MLP widths) when a spec leaves it out
    build: Callable[[nn.Module, ModelSpec], ImplicitDecoder]  # (encoder, spec) -> model
    variants: tuple[Variant, ...] = ()
    official_names: tuple[str, ...] = ()  # ``model.name`` values of the official .pth files it reads
    # official ``model.name`` and ``model.args`` -> ModelSpec fields beyond the encoder (``hidden`` and the
    # family's own); ValueError for args it cannot read
    from_official: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
    default: bool = False  # the family of a spec that names no method (one only)
    # the spec's values of the family's own fields (and what it needs of ``hidden``): ValueError naming a
    # bad one; called when a spec is made, before anything is built (``liif.models.validate`` has helpers)
    check: Callable[[ModelSpec], None] | None = None


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family``; registering the same declaration again is a no-op. Returns it."""
    old = _FAMILIES.get(family.name)
    if old is not None and old != family:
        raise ValueError(f"a different decoder family {family.name!r} is registered already ({old.model.__name__})")
    problem = _conflict(family)
    if problem:
        raise ValueError(f"cannot register decoder family {family.name!r}: {problem}")
    _FAMILIES[family.name] = family
    return family


def _conflict(family: Family) -> str | None:
    shared = sorted(set(family.spec_fields) & set(SHARED_FIELDS))
    if shared:
        return f"own spec fields {shared} are fields every family shares"
    if family.official_names and family.from_official is None:
        return "it declares official names but no from_official reader"
    unnamed = [v.name for v in family.variants if v.spec.get("method") != family.name]
    if unnamed:
        return f"variants {unnamed} do not name method {family.name!r} in their spec"
    for other in _FAMILIES.values():
        if other.name == family.name:
            continue
        if clash := sorted(set(family.official_names) & set(other.official_names)):
            return f"{other.name!r} reads official {clash} already"
        if clash := sorted({v.name for v in family.variants} & {v.name for v in other.variants}):
            return f"variants {clash} belong to {other.name!r}"
        if family.default and other.default:
            return f"{other.name!r} is the default family already"
    return None


def unregister(name: str) -> None:
    """Remove a family (tests register a toy family and remove it afterwards)."""
    _FAMILIES.pop(name, None)


def get(name: str) -> Family:
    fam = _FAMILIES.get(name)
    if fam is None:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(_FAMILIES) or 'none registered'}")
    return fam


def families() -> tuple[Family, ...]:
    return tuple(_FAMILIES.values())


def default() -> Family:
    """The family of a spec without ``method``."""
    for fam in _FAMILIES.values():
        if fam.default:
            return fam
    raise ValueError("no default decoder family is registered")


def reading(official_name: Any) -> Family | None:
    """The family that reads official checkpoints named ``official_name``."""
    return next((f for f in _FAMILIES.values() if official_name in f.official_names), None)


def official_names() -> list[str]:
    return [n for f in _FAMILIES.values() for n in f.official_names]


def variants() -> dict[str, Variant]:
    """Every registered family's variants, by name."""
    return {v.name: v for f in _FAMILIES.values() for v in f.variants}


class VariantView(Mapping[str, Variant]):
    """The registry's variants by name, read live (a family registered later shows up)."""

    def __getitem__(self, name: str) -> Variant:
        return variants()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(variants())

    def __len__(self) -> int:
        return len(variants())


def official_hidden(args: dict[str, Any]) -> list[int] | None:
    """The MLP widths of an official ``args`` dict (``imnet_spec.args.hidden_list``); None without an MLP.
    ValueError when ``imnet_spec`` is not laid out as the official code reads it."""
    imnet = args.get("imnet_spec")
    if not imnet:
        return None
    if not isinstance(imnet, dict) or not isinstance(imnet.get("args"), dict):
        raise ValueError(f"imnet_spec must be a mapping with an 'args' mapping, got {str(imnet)[:80]}")
    hidden = imnet["args"].get("hidden_list", [])
    if not isinstance(hidden, (list, tuple)):
        raise ValueError(f"imnet_spec.args.hidden_list must be a list of widths, got {str(hidden)[:80]}")
    return list(hidden)
