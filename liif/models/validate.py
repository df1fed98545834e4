"""Checks of model spec values, run before a model is built, so a bad or hostile spec (a checkpoint's
sidecar JSON, a training config, an official ``args`` dict) is a one-line error, never a traceback or a
huge allocation.

Each helper takes the field's name and value and returns the value in its canonical type, or raises
``ValueError`` naming the field and what it must be. Sizes are capped (``MAX_*``): the caps sit far
above every published LIIF/LTE model, and keep what the spec builds (first on the ``meta`` device, see
``liif.models.spec.shapes``) small enough to build in about a second and to hold in memory.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

MAX_CHANNELS = 4096  # feature channels of an encoder (EDSR's n_feats, RDN's G0 and G)
MAX_BLOCKS = 256  # residual blocks of EDSR, dense blocks of RDN
MAX_DENSE_CONVS = 1024  # RDN: blocks x convs per block
MAX_WIDTH = 65536  # one MLP layer's width (and LTE's hidden_dim)
MAX_LAYERS = 64  # MLP layers
MAX_PARAMS = 1_000_000_000  # parameters of a whole model: 4 GB in fp32 (the official ones: 1.6 M to 43 M)
MIN_STD = 1e-6  # a normalisation std below this makes the encoder's input or the output blow up


def _text(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def integer(name: str, v: Any, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] (a bool or an integral float is not one)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {_text(v)}")
    n = int(v)
    if not lo <= n <= hi:
        raise ValueError(f"{name} must be from {lo} to {hi}, got {n}")
    return n


def number(name: str, v: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite real number in [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {_text(v)}")
    if not lo <= float(v) <= hi:
        raise ValueError(f"{name} must be from {lo:g} to {hi:g}, got {_text(v)}")
    return float(v)


def boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false, got {_text(v)}")
    return v


def choice(name: str, v: Any, options: Iterable[Any]) -> Any:
    opts = list(options)
    if isinstance(v, bool) or v not in opts:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, opts))}, got {_text(v)}")
    return v


def text(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string, got {_text(v)}")
    return v


def mapping(name: str, v: Any) -> dict[str, Any]:
    """A dict with string keys (a JSON object), copied."""
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise ValueError(f"{name} must be a mapping of names to values, got {_text(v)}")
    return dict(v)


def widths(name: str, v: Any) -> list[int]:
    """A list of MLP widths, each a whole number from 1 to ``MAX_WIDTH``; at most ``MAX_LAYERS``."""
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{name} must be a list of layer widths (whole numbers), got {_text(v)}")
    if len(v) > MAX_LAYERS:
        raise ValueError(f"{name} has {len(v)} layers; at most {MAX_LAYERS}")
    return [integer(f"{name}[{i}]", w, 1, MAX_WIDTH) for i, w in enumerate(v)]


def triple(name: str, v: Any, std: bool = False) -> tuple[float, float, float]:
    """Three finite numbers (one per RGB channel); a std is at least ``MIN_STD``."""
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"{name} must be a list of 3 numbers (R, G, B), got {_text(v)}")
    a, b, c = (number(f"{name}[{i}]", x) for i, x in enumerate(v))
    if std and min(a, b, c) < MIN_STD:
        raise ValueError(f"{name} must be positive (at least {MIN_STD:g}) in every channel, got {[a, b, c]}")
    return a, b, c


def known_keys(name: str, d: Mapping[str, Any], known: Iterable[str]) -> None:
    extra = sorted(set(d) - set(known))
    if extra:
        raise ValueError(f"unknown {name} {extra}; known: {', '.join(known)}")


__all__ = ["MAX_BLOCKS", "MAX_CHANNELS", "MAX_DENSE_CONVS", "MAX_LAYERS", "MAX_PARAMS", "MAX_WIDTH", "MIN_STD",
           "boolean", "choice", "integer", "known_keys", "mapping", "number", "text", "triple", "widths"]
