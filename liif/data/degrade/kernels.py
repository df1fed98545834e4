"""Blur kernels: isotropic and anisotropic Gaussian, generalized Gaussian, plateau, and the circular
low-pass (2-D sinc) whose ringing and overshoot imitate sharpening and band-limited resampling.

Every kernel is a float64 (k, k) array with odd k, centred, summing to 1. The shapes follow the
Real-ESRGAN paper (Wang et al., 2021, section 3.1): with the quadratic form q(x) = x^T S^-1 x of a
covariance S = R diag(sx^2, sy^2) R^T,

- Gaussian: exp(-q / 2)
- generalized Gaussian: exp(-q^beta / 2)   (beta < 1 heavier tails, beta > 1 flatter top)
- plateau: 1 / (1 + q^beta)
- sinc: omega J1(omega r) / (2 pi r), the impulse response of an ideal disc low-pass of cutoff omega.
"""
from __future__ import annotations

import math

import numpy as np

KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) offsets from the centre of a size x size kernel, x along columns."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    r = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(r, r, indexing="xy")


def quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T S^-1 x on the kernel grid, S the covariance with std ``sigma_x`` along the direction at angle
    ``theta`` (radians, from the x axis) and ``sigma_y`` across it."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be > 0, got {sigma_x}, {sigma_y}")
    x, y = grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y  # coordinates along and across the rotated axes
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def normalized(k: np.ndarray) -> np.ndarray:
    return k / k.sum()


def gaussian(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Gaussian kernel; isotropic when ``sigma_y`` is None."""
    q = quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return normalized(np.exp(-0.5 * q))


def generalized(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Generalized Gaussian exp(-q^beta / 2); beta = 1 is the Gaussian."""
    if beta <= 0:
        raise ValueError(f"generalized Gaussian beta must be > 0, got {beta}")
    return normalized(np.exp(-0.5 * quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Plateau-shaped kernel 1 / (1 + q^beta): flat near the centre, slow polynomial tails."""
    if beta <= 0:
        raise ValueError(f"plateau beta must be > 0, got {beta}")
    return normalized(1.0 / (1.0 + quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1(x) from Bessel's integral (1 / 2 pi) int_0^2pi cos(t - x sin t) dt, by the rectangle rule, which
    converges geometrically for a periodic integrand (numpy has no Bessel functions; scipy is no dependency)."""
    x = np.asarray(x, dtype=np.float64)
    # The integrand's harmonics fade beyond order |x|: |x| + 64 samples leave an error below 1e-11.
    steps = 64 + int(np.abs(x).max(initial=0.0))
    t = np.arange(steps, dtype=np.float64) * (2 * math.pi / steps)
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def sinc(size: int, omega: float) -> np.ndarray:
    """Circular low-pass kernel of cutoff ``omega`` (radians per pixel, 0 < omega <= pi), cut to size x size."""
    if not 0 < omega <= math.pi:
        raise ValueError(f"sinc cutoff must be in (0, pi], got {omega}")
    x, y = grid(size)
    r = np.hypot(x, y)
    safe = np.where(r == 0, 1.0, r)
    k = np.where(r == 0, omega ** 2 / (4 * math.pi), omega * bessel_j1(omega * safe) / (2 * math.pi * safe))
    return normalized(k)


def pulse(size: int) -> np.ndarray:
    """The identity kernel (1 at the centre)."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k
