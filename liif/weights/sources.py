"""Which variants have weights we can fetch, and from where.

A family declares its variants, with their ``Pretrained`` sources, in its own file (the registry,
:mod:`liif.models.family`). ``PENDING`` holds sources of variants whose family is not part of this
tree yet: the official LMF weights (LM-LIIF, LM-LTE; families ``lmliif`` and ``lmlte``). Each entry
is a whole ``Variant``, so the file can be fetched before its family exists; once the family
declares a variant of the same name, the registered declaration wins and the source here attaches
to it unless it has its own. Moving the ``Pretrained`` into the family file and deleting the entry
here is then a no-op for users.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, MutableMapping

from liif.errors import LiifError
from liif.models.family import families
from liif.models.spec import VARIANTS
from liif.models.variant import Pretrained, Variant

# The official LMF repository at a pinned commit (lmf-spec.md): files committed to git, verified by
# their blob ids, which any clone of that commit lists (``git ls-tree``).
LMF = "https://raw.githubusercontent.com/HeZongyao/LMF/17e356edb6b792b293d70450d64fad4e39e1b2e4"
LMF_LICENSE = "Apache-2.0 (HeZongyao/LMF; weights by the LMF authors)"
PENDING: dict[str, Variant] = {v.name: v for v in (
    Variant("lm-liif", "official EDSR-baseline LM-LIIF (LMF, CVPR 2024; DIV2K, x1-x4 training scales)",
            {"method": "lmliif", "encoder": "edsr-baseline"},
            Pretrained(url=f"{LMF}/save/pretrained_models/edsr-b_lm-liif.pth", verify="git-blob",
                       digest="b3e49670ee2cfdbd9c42f7cc0b6f56b592614cd4", license=LMF_LICENSE)),
    Variant("lm-lte", "official EDSR-baseline LM-LTE (LMF, CVPR 2024; DIV2K, x1-x4 training scales)",
            {"method": "lmlte", "encoder": "edsr-baseline"},
            Pretrained(url=f"{LMF}/save/pretrained_models/edsr-b_lm-lte.pth", verify="git-blob",
                       digest="de7b1f5d91b83568f0306f88171aeecfe268ffb2", license=LMF_LICENSE)),
)}


def _declared() -> dict[str, Variant]:
    """Every variant, registered or pending, with the pending sources attached."""
    out = dict(VARIANTS)
    for name, v in PENDING.items():
        reg = out.get(name)
        if reg is None:
            out[name] = v
        elif reg.pretrained is None:
            out[name] = dataclasses.replace(reg, pretrained=v.pretrained)
    return out


def has_family(v: Variant) -> bool:
    """Whether the family that reads this variant's weights is registered (pending ones may not be)."""
    return v.spec.get("method") in {f.name for f in families()}


class Fetchable(MutableMapping[str, Variant]):
    """The variants whose weights we can fetch and verify, read live from the registry and
    ``PENDING``; entries set here (a test's fake source) come on top."""

    def __init__(self) -> None:
        self.extra: dict[str, Variant] = {}

    def _all(self) -> dict[str, Variant]:
        return {**{n: v for n, v in _declared().items() if v.pretrained is not None}, **self.extra}

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
    """Every variant (``liif weights list``): registered, pending, and any set in ``REGISTRY``."""
    return {**_declared(), **_FETCHABLE.extra}


def entry(name: str) -> Pretrained:
    """Where the weights of variant ``name`` come from."""
    v = REGISTRY.get(name)
    if v is None or v.pretrained is None:
        note = f" ({VARIANTS[name].weights_note})" if name in VARIANTS and VARIANTS[name].weights_note else ""
        raise LiifError(f"no download of {name!r} weights here{note}: download the file yourself and give its "
                        f"path (--weights PATH); names liif downloads: {', '.join(REGISTRY)}")
    return v.pretrained
