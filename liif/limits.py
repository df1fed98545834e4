"""Pixel limits and how they are read from options and the environment.

- input pixels (``LIIF_MAX_INPUT_PIXELS``, ``--max-input-pixels``, ``max_input_pixels=``; default 50 M):
  checked on the image header, before any pixel is decoded, so a small file that declares a huge
  image (a decompression bomb) is refused at once;
- output pixels (``LIIF_MAX_PIXELS``, ``--max-pixels``, ``max_pixels=``; default 100 M): the pixels
  of the rendered window (its colour and its alpha).

A count is a positive whole number: ``100000000``, ``100_000_000`` or ``1e8`` (an integral float);
a fraction such as ``2.5`` is refused, as are text, 0, negatives, inf and NaN.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np

from liif.errors import LiifError

DEFAULT_MAX_INPUT_PIXELS = 50_000_000
DEFAULT_MAX_PIXELS = 100_000_000


def parse_count(name: str, value: object) -> int:
    """A positive whole number from an int, an integral float or their text; else one-line LiifError."""
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            number: float | int = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise LiifError(f"{name} must be a whole number of pixels, e.g. 50000000 or 5e7; "
                                f"got {value!r}") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        number = value  # type: ignore[assignment]
    else:
        raise LiifError(f"{name} must be a whole number of pixels; got {value!r}")
    if isinstance(number, float) or not isinstance(number, int):
        f = float(number)
        if not math.isfinite(f) or f != int(f):
            raise LiifError(f"{name} must be a whole number of pixels; got {value!r}")
        number = int(f)
    if number <= 0:
        raise LiifError(f"{name} must be positive; got {value!r}")
    return int(number)


def from_env(var: str, default: int) -> int:
    """The count in environment variable ``var`` (unset or empty: ``default``)."""
    text = os.environ.get(var, "")
    return parse_count(var, text) if text.strip() else default


def max_input_pixels(value: object = None) -> int:
    return from_env("LIIF_MAX_INPUT_PIXELS", DEFAULT_MAX_INPUT_PIXELS) if value is None else \
        parse_count("max_input_pixels", value)


def max_pixels(value: object = None) -> int:
    return from_env("LIIF_MAX_PIXELS", DEFAULT_MAX_PIXELS) if value is None else parse_count("max_pixels", value)


def check_input(hw: tuple[int, int], limit: int, what: str = "input") -> None:
    """Refuse an input of (height, width) above ``limit`` pixels, naming the ways to raise it."""
    h, w = hw
    if h * w > limit:
        raise LiifError(f"{what} is {w}x{h} (WxH) = {h * w:,} pixels, above the input limit of {limit:,} "
                        "(raise it with --max-input-pixels / LIIF_MAX_INPUT_PIXELS / max_input_pixels)")


__all__ = ["DEFAULT_MAX_INPUT_PIXELS", "DEFAULT_MAX_PIXELS", "check_input", "from_env", "max_input_pixels",
           "max_pixels", "parse_count"]


def parse_memory(text: str) -> int:
    """'512M', '2G', '300000000' -> bytes."""
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in "KMG" else t)
    except ValueError:
        raise LiifError(f"--max-memory must look like 512M or 2G; got {text!r}") from None
    if not math.isfinite(value) or value * mult < 1:
        raise LiifError(f"--max-memory must be a finite size of at least 1 byte, e.g. 512M; got {text!r}")
    return int(value * mult)


def format_memory(n: int) -> str:
    """Bytes -> the shortest exact form :func:`parse_memory` reads back: 268435456 -> '256M'."""
    for suffix, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)
