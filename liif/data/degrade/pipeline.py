"""Real-ESRGAN's second-order degradation, ended by the resize to the LR size of LIIF's sampled scale.

For an HR crop and the LR size (n, n) the sampler drew (n = inp_size, the crop n x s for s ~ U(1, 4)),
after the clean branch (``clean_prob``: plain bicubic) and the camera branch (``camera.prob``: a photo's
blur, noise and JPEG, :mod:`.camera`), the rest of the samples go through:

1. round one, on the crop: blur with a random kernel, random resize (relative to the crop), Gaussian or
   Poisson noise, JPEG;
2. round two: blur (probability 0.8), random resize (relative to the LR size), noise;
3. the end, in random order: {resize to (n, n) with a random filter, then a sinc filter (probability
   0.8)} and {the final JPEG}; the result is rounded to uint8.

So the LR is exactly the size plain bicubic down-sampling gives, whatever the scale: the model learns
every scale, on inputs that carry blur, resampling, noise and compression of two generations.
Intermediate sizes never fall below 0.6 n after round one or 0.3 n after round two, the smallest the
x4 recipe reaches (0.15 x 4 n and 0.3 n): at small scales the first resize would otherwise shrink
the crop far below the LR size.

``degrade`` draws everything from the generator it is given, in a fixed order: a seeded generator
gives the same LR on every machine and in every worker.
"""
from __future__ import annotations

import math

import numpy as np

from liif.data.degrade import blur, camera, jpeg, kernels, noise, resize
from liif.data.degrade.camera import Camera
from liif.data.degrade.settings import RESIZES, Degradation, Round
from liif.data.resize import resize_uint8

FINAL_SINC_SIZE = 21
FIRST_FLOOR, SECOND_FLOOR = 0.6, 0.3  # smallest side after rounds one and two, in units of the LR side


def _uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _pick(rng: np.random.Generator, weights: dict[str, float], names: tuple[str, ...]) -> str:
    w = np.array([float(weights.get(k, 0.0)) for k in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def random_kernel(rng: np.random.Generator, r: Round) -> np.ndarray:
    """A kernel as one round of the recipe draws it: sinc with ``r.sinc_prob``, else a kind by
    ``r.kernel_probs`` with sigmas from ``r.blur_sigma`` and a random orientation."""
    size = 2 * int(rng.integers(r.kernel_size[0] // 2, r.kernel_size[1] // 2 + 1)) + 1
    if rng.random() < r.sinc_prob:
        # small kernels: a cutoff high enough that the truncated response is still low-pass
        low = math.pi / 3 if size < 13 else math.pi / 5
        return kernels.sinc(size, float(rng.uniform(low, math.pi)))
    kind = _pick(rng, r.kernel_probs, kernels.KINDS)
    sx = _uniform(rng, r.blur_sigma)
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sy, theta = sx, 0.0
    else:
        sy, theta = _uniform(rng, r.blur_sigma), float(rng.uniform(-math.pi, math.pi))
    if kind.startswith("generalized"):
        return kernels.generalized(size, sx, sy, theta, _beta(rng, r.betag))
    if kind.startswith("plateau"):
        return kernels.plateau(size, sx, sy, theta, _uniform(rng, r.betap))
    return kernels.gaussian(size, sx, sy, theta)


def _beta(rng: np.random.Generator, bounds: list[float]) -> float:
    """A generalized Gaussian's beta: when the range holds 1, half the draws below it (heavy tails) and half
    above (flat tops), as the recipe draws them."""
    lo, hi = bounds
    if lo < 1.0 < hi:
        return float(rng.uniform(lo, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, hi))
    return float(rng.uniform(lo, hi))


def random_resize(rng: np.random.Generator, img: np.ndarray, r: Round, ref_hw: tuple[int, int],
                  floor: int) -> np.ndarray:
    """Resize by a factor drawn from ``r`` (up, down or keep), relative to ``ref_hw``; sides >= ``floor``."""
    how = _pick(rng, r.resize_probs, RESIZES)
    lo, hi = r.resize_range
    factor = float(rng.uniform(1.0, hi)) if how == "up" else float(rng.uniform(lo, 1.0)) if how == "down" else 1.0
    mode = str(rng.choice(list(resize.MODES)))
    size = (max(floor, round(ref_hw[0] * factor)), max(floor, round(ref_hw[1] * factor)))
    return resize.resize(img, size, mode)


def random_noise(rng: np.random.Generator, img: np.ndarray, r: Round) -> np.ndarray:
    """Gaussian noise with ``r.gaussian_noise_prob``, else Poisson; gray with ``r.gray_noise_prob``; clamped."""
    gaussian = rng.random() < r.gaussian_noise_prob
    gray = bool(rng.random() < r.gray_noise_prob)
    if gaussian:
        out = noise.gaussian(img, _uniform(rng, r.noise_sigma), gray, rng)
    else:
        out = noise.poisson(img, _uniform(rng, r.poisson_scale), gray, rng)
    return np.clip(out, 0.0, 1.0)


def random_jpeg(rng: np.random.Generator, img: np.ndarray, r: Round) -> np.ndarray:
    if rng.random() >= r.jpeg_prob:
        return img
    return jpeg.jpeg(img, int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)))


def degrade(crop: np.ndarray, out_hw: tuple[int, int], d: Degradation, rng: np.random.Generator) -> np.ndarray:
    """uint8 HR crop (H, W, 3) -> degraded uint8 LR of exactly ``out_hw``."""
    if rng.random() < d.clean_prob:
        return resize_uint8(np.ascontiguousarray(crop), out_hw)
    cam = d.camera
    if cam.prob > 0 and rng.random() < cam.prob:  # no draw when the branch is off: older configs keep their LRs
        order = "hr-first" if rng.random() < cam.hr_first_prob else "classic"
        spec = Camera((cam.blur_sigma[0], cam.blur_sigma[1]), (cam.noise_sigma[0], cam.noise_sigma[1]),
                      (cam.jpeg_quality[0], cam.jpeg_quality[1]), order)
        return camera.degrade_to(np.ascontiguousarray(crop), out_hw, spec, rng)
    n = min(out_hw)
    x = crop.astype(np.float32) / np.float32(255.0)
    first, second = d.first, d.second
    # round one, on the crop
    if rng.random() < first.blur_prob:
        x = blur.blur(x, random_kernel(rng, first))
    x = random_resize(rng, x, first, crop.shape[:2], max(1, math.ceil(FIRST_FLOOR * n)))
    x = random_jpeg(rng, random_noise(rng, x, first), first)
    # round two, resized relative to the LR size
    if rng.random() < second.blur_prob:
        x = blur.blur(x, random_kernel(rng, second))
    x = random_resize(rng, x, second, out_hw, max(1, math.ceil(SECOND_FLOOR * n)))
    x = random_noise(rng, x, second)
    # the end: the resize to the LR size (+ sinc) and the last JPEG, in either order
    sinc = (kernels.sinc(FINAL_SINC_SIZE, float(rng.uniform(math.pi / 3, math.pi)))
            if rng.random() < d.final_sinc_prob else None)
    mode = str(rng.choice(list(resize.MODES)))
    jpeg_last = rng.random() < d.jpeg_last_prob
    if not jpeg_last:
        x = random_jpeg(rng, x, second)
    x = resize.resize(x, out_hw, mode)
    if sinc is not None:
        x = blur.blur(x, sinc)
    x = np.clip(x, 0.0, 1.0)
    if jpeg_last:
        x = random_jpeg(rng, x, second)
    return jpeg.to_uint8(x)
