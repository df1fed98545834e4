"""The training degradation's settings: the ``data.train.degradation`` block of a training config.

Defaults are the Real-ESRGAN recipe (Wang et al., 2021: the values of its published training options),
round by round: a config that writes ``degradation: {}`` trains on that recipe, and one key overrides
one number (``--set data.train.degradation.second.noise_sigma=[1,10]``). Noise sigmas are on the 0-255
scale. Ranges are ``[low, high]``, drawn uniformly (JPEG qualities and kernel sizes as integers, kernel
sizes odd). ``problems`` lists what is wrong with a block, each naming its config key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from liif.data.degrade.kernels import KINDS

RESIZES = ("up", "down", "keep")


@dataclass
class Round:
    """One round of blur -> random resize -> noise -> JPEG (the first round's defaults)."""

    blur_prob: float = 1.0
    kernel_size: list[int] = field(default_factory=lambda: [7, 21])  # odd sizes in this range
    kernel_probs: dict[str, float] = field(default_factory=lambda: {
        "iso": 0.45, "aniso": 0.25, "generalized_iso": 0.12, "generalized_aniso": 0.03,
        "plateau_iso": 0.12, "plateau_aniso": 0.03})
    sinc_prob: float = 0.1  # a sinc kernel instead of the kinds above
    blur_sigma: list[float] = field(default_factory=lambda: [0.2, 3.0])
    betag: list[float] = field(default_factory=lambda: [0.5, 4.0])  # generalized Gaussian's beta
    betap: list[float] = field(default_factory=lambda: [1.0, 2.0])  # plateau's beta
    resize_probs: dict[str, float] = field(default_factory=lambda: {"up": 0.2, "down": 0.7, "keep": 0.1})
    resize_range: list[float] = field(default_factory=lambda: [0.15, 1.5])
    gaussian_noise_prob: float = 0.5  # else Poisson noise
    noise_sigma: list[float] = field(default_factory=lambda: [1.0, 30.0])
    poisson_scale: list[float] = field(default_factory=lambda: [0.05, 3.0])
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 95])


@dataclass
class SecondRound(Round):
    """The second round's defaults; its resize is relative to the LR size, and its JPEG is the last step."""

    blur_prob: float = 0.8
    blur_sigma: list[float] = field(default_factory=lambda: [0.2, 1.5])
    resize_probs: dict[str, float] = field(default_factory=lambda: {"up": 0.3, "down": 0.4, "keep": 0.3})
    resize_range: list[float] = field(default_factory=lambda: [0.3, 1.2])
    noise_sigma: list[float] = field(default_factory=lambda: [1.0, 25.0])
    poisson_scale: list[float] = field(default_factory=lambda: [0.05, 2.5])


@dataclass
class CameraMix:
    """The camera branch: with ``prob``, a sample is degraded like a photo (:mod:`.camera`: Gaussian blur of
    the HR, bicubic resize to the LR size, Gaussian colour noise, JPEG; with ``hr_first_prob`` the noise and
    the JPEG come before the resize) instead of by the second-order recipe."""

    prob: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.3])
    noise_sigma: list[float] = field(default_factory=lambda: [2.0, 7.0])
    jpeg_quality: list[int] = field(default_factory=lambda: [45, 75])
    hr_first_prob: float = 0.5


@dataclass
class Degradation:
    """Second-order degradation, then the resize to the sampled scale's LR size (see :mod:`.pipeline`)."""

    clean_prob: float = 0.0  # samples made the paper's way (PIL bicubic only), to keep clean inputs sharp
    camera: CameraMix = field(default_factory=CameraMix)
    first: Round = field(default_factory=Round)
    second: SecondRound = field(default_factory=SecondRound)
    final_sinc_prob: float = 0.8  # a sinc filter after the final resize
    jpeg_last_prob: float = 0.5  # the final JPEG after the final resize (else before it)


def problems(d: Degradation, key: str = "data.train.degradation") -> list[str]:
    """What is wrong with ``d`` (empty: nothing), one line per problem naming its config key."""
    out = [f"config key {key}.{name} must be a probability in [0, 1], got {getattr(d, name)!r}"
           for name in ("clean_prob", "final_sinc_prob", "jpeg_last_prob") if not _prob(getattr(d, name))]
    for name in ("first", "second"):
        out += round_problems(getattr(d, name), f"{key}.{name}")
    return out + camera_problems(d.camera, f"{key}.camera")


def camera_problems(c: CameraMix, key: str) -> list[str]:
    out = [f"config key {key}.{name} must be a probability in [0, 1], got {getattr(c, name)!r}"
           for name in ("prob", "hr_first_prob") if not _prob(getattr(c, name))]
    for name in ("blur_sigma", "noise_sigma"):
        if not _range(getattr(c, name), 0.0, False):
            out.append(f"config key {key}.{name} must be [low, high] with 0 <= low <= high, both finite, "
                       f"got {getattr(c, name)!r}")
    out += _quality_problems(c.jpeg_quality, f"{key}.jpeg_quality")
    return out


def round_problems(r: Round, key: str) -> list[str]:
    out: list[str] = []
    for f in fields(r):
        value, k = getattr(r, f.name), f"{key}.{f.name}"
        if f.name.endswith("_prob") and not _prob(value):
            out.append(f"config key {k} must be a probability in [0, 1], got {value!r}")
    for name, strict in (("blur_sigma", True), ("betag", True), ("betap", True), ("resize_range", True),
                         ("noise_sigma", False), ("poisson_scale", False)):
        if not _range(getattr(r, name), 0.0, strict):
            out.append(f"config key {key}.{name} must be [low, high] with 0 {'<' if strict else '<='} low <= high, "
                       f"both finite, got {getattr(r, name)!r}")
    size = r.kernel_size
    if not (_range(size, 2) and all(isinstance(s, int) and s % 2 == 1 for s in size) and size[1] <= 63):
        out.append(f"config key {key}.kernel_size must be [low, high], odd integers from 3 to 63, got {size!r}")
    out += _quality_problems(r.jpeg_quality, f"{key}.jpeg_quality")
    out += _weights(r.kernel_probs, KINDS, f"{key}.kernel_probs")
    out += _weights(r.resize_probs, RESIZES, f"{key}.resize_probs")
    if _range(r.resize_range, 0.0) and not r.resize_range[0] <= 1.0 <= r.resize_range[1]:
        out.append(f"config key {key}.resize_range must hold 1 (down-scales below it, up-scales above), "
                   f"got {r.resize_range!r}")
    return out


def _quality_problems(q: Any, key: str) -> list[str]:
    """A JPEG quality range: [low, high], integers from 1 to 100."""
    if _range(q, 0) and all(isinstance(v, int) for v in q) and q[1] <= 100:
        return []
    return [f"config key {key} must be [low, high], integers from 1 to 100, got {q!r}"]


def _prob(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _range(v: Any, low: float, strict: bool = True) -> bool:
    """[a, b] of finite numbers with low < a <= b (low <= a when not ``strict``)."""
    return (isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v)
            and (low < v[0] if strict else low <= v[0]) and v[0] <= v[1])


def _weights(w: Any, names: tuple[str, ...], key: str) -> list[str]:
    """Relative weights of ``names``: a mapping of some of them to numbers >= 0, not all 0."""
    if not isinstance(w, dict):
        return [f"config key {key} must be a mapping of {', '.join(names)} to weights, got {w!r}"]
    unknown = sorted(set(w) - set(names))
    if unknown:
        return [f"config key {key}: unknown {unknown[0]!r} (known: {', '.join(names)})"]
    if not (all(_number(v) and v >= 0 for v in w.values()) and sum(w.values()) > 0):
        return [f"config key {key} must map to numbers >= 0, not all 0, got {w!r}"]
    return []
