"""Camera-like degradation of whole images, for evaluation sets (``liif data degrade``).

Per image, with a blur sigma, a noise sigma and a JPEG quality drawn uniformly from their ranges:
isotropic Gaussian blur of the HR (optics), bicubic down-sampling by the integer scale (PIL, the
evaluation protocol's filter, from the HR cropped to a multiple of the scale), Gaussian colour noise
(sensor), JPEG (the file). ``order="hr-first"`` puts the noise and the JPEG before the down-sampling
instead (the image is degraded at full size, then shrunk: milder, the noise averages out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from liif.data.degrade import blur, jpeg, kernels, noise
from liif.data.resize import resize_uint8
from liif.errors import LiifError

ORDERS = ("classic", "hr-first")


@dataclass(frozen=True)
class Camera:
    """Ranges of the camera-like degradation; the defaults are mild (a phone photo saved for the web)."""

    blur_sigma: tuple[float, float] = (0.5, 1.3)  # pixels of the HR
    noise_sigma: tuple[float, float] = (2.0, 7.0)  # on the 0-255 scale
    jpeg_quality: tuple[int, int] = (45, 75)
    order: str = "classic"

    def check(self) -> None:
        """One-line errors for ranges that are not [low, high] within bounds."""
        for name, (lo, hi), floor, ceil in (("blur sigma", self.blur_sigma, 0.0, 50.0),
                                            ("noise sigma", self.noise_sigma, 0.0, 255.0),
                                            ("JPEG quality", self.jpeg_quality, 1, 100)):
            if not (math.isfinite(lo) and math.isfinite(hi) and floor <= lo <= hi <= ceil):
                raise LiifError(f"{name} range must be LOW,HIGH with {floor} <= LOW <= HIGH <= {ceil}, got {lo},{hi}")
        if self.order not in ORDERS:
            raise LiifError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur, the kernel 2 ceil(3 sigma) + 1 wide; sigma 0 leaves the image as it is."""
    if sigma <= 0:
        return img.astype(np.float32)
    return blur.blur(img, kernels.gaussian(2 * math.ceil(3 * sigma) + 1, sigma))


def degrade(hr: np.ndarray, scale: int, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """uint8 HR (H, W, 3) -> uint8 LR (H // scale, W // scale, 3), degraded as ``cam`` says."""
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    if h < 1 or w < 1:
        raise LiifError(f"a {hr.shape[1]}x{hr.shape[0]} image is too small for x{scale}")
    return degrade_to(np.ascontiguousarray(hr[:h * scale, :w * scale]), (h, w), cam, rng)


def degrade_to(hr: np.ndarray, out_hw: tuple[int, int], cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """uint8 HR (H, W, 3) -> degraded uint8 LR of exactly ``out_hw`` (any, not only integer, ratio): the
    evaluation sets' degradation, and the training pipeline's camera branch at LIIF's continuous scales."""
    sigma_b = float(rng.uniform(*cam.blur_sigma))
    sigma_n = float(rng.uniform(*cam.noise_sigma))
    quality = int(rng.integers(cam.jpeg_quality[0], cam.jpeg_quality[1] + 1))
    x = gaussian_blur(hr.astype(np.float32) / 255.0, sigma_b)
    if cam.order == "classic":
        low = resize_uint8(jpeg.to_uint8(x), out_hw)
        noisy = noise.gaussian(low.astype(np.float32) / 255.0, sigma_n, False, rng)
        return jpeg.jpeg_uint8(jpeg.to_uint8(noisy), quality)
    shot = jpeg.jpeg_uint8(jpeg.to_uint8(noise.gaussian(x, sigma_n, False, rng)), quality)
    return resize_uint8(shot, out_hw)
