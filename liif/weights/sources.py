"""Which variants have weights we can fetch, and from where.

A family declares its variants, with their ``Pretrained`` sources, in its own file (the registry,
:mod:`liif.models.family`); this module lists the fetchable ones, plus any a test sets in ``REGISTRY``.
"""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from liif.errors import LiifError
from liif.models.spec import VARIANTS
from liif.models.variant import Pretrained, Variant


class Fetchable(MutableMapping[str, Variant]):
    """The variants whose weights we can fetch and verify, read live from the registry; entries set here
    (a test's fake source) come on top."""

    def __init__(self) -> None:
        self.extra: dict[str, Variant] = {}

    def _all(self) -> dict[str, Variant]:
        return {**{n: v for n, v in VARIANTS.items() if v.pretrained is not None}, **self.extra}

    def __getitem__(self, name: str) -> Variant:
        return self._all()[name]

    def __setitem__(self, name: str, variant: Variant) -> None:
        self.extra[name] = variant

    def __delitem__(self, name: str) -> None:
        del self.extra[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


_FETCHABLE = Fetchable()
REGISTRY: MutableMapping[str, Variant] = _FETCHABLE


def known() -> dict[str, Variant]:
    """Every variant (``liif weights list``): registered, and any set in ``REGISTRY``."""
    return {**VARIANTS, **_FETCHABLE.extra}


def entry(name: str) -> Pretrained:
    """Where the weights of variant ``name`` come from."""
    v = REGISTRY.get(name)
    if v is None or v.pretrained is None:
        note = f" ({VARIANTS[name].weights_note})" if name in VARIANTS and VARIANTS[name].weights_note else ""
        raise LiifError(f"no download of {name!r} weights here{note}: download the file yourself and give its "
                        f"path (--weights PATH); names liif downloads: {', '.join(REGISTRY)}")
    return v.pretrained
