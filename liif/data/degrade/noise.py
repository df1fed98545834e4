"""Additive noise on float images in [0, 1]: Gaussian (read noise) and Poisson (shot noise), in colour
(independent per channel) or gray (one field shared by the three channels, like luminance noise).

Both return the noisy image unclamped; the caller clamps where the recipe does.
"""
from __future__ import annotations

import numpy as np

from liif.imaging.channels import LUMA


def gaussian(img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """``img`` + N(0, (sigma / 255)^2) per pixel; ``sigma`` on the 0-255 scale."""
    shape = (*img.shape[:2], 1 if gray else img.shape[2])
    return (img + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)).astype(np.float32)


def poisson(img: np.ndarray, scale: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """``img`` + scale * (Poisson(255 x) / 255 - x): shot noise of a sensor that counts 255 photons at
    white (variance x / 255 at level x), amplified by ``scale``. Gray: drawn on the luma, added to all
    three channels."""
    x = np.clip(img, 0.0, 1.0)
    if gray:
        x = (x @ LUMA)[..., None]
    counts = rng.poisson(x.astype(np.float64) * 255.0)
    return (img + scale * (counts / 255.0 - x)).astype(np.float32)
