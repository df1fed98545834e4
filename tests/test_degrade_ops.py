"""The degradation operators one by one: kernels, blur, resize, noise, JPEG (liif/data/degrade)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import random_image
from liif.data.degrade import blur, jpeg, kernels, noise, resize

SIZES = st.integers(1, 10).map(lambda k: 2 * k + 1)
SIGMAS = st.floats(0.2, 4.0)
ANGLES = st.floats(-math.pi, math.pi)


def _moments(k: np.ndarray) -> tuple[float, float]:
    """Variances of a kernel along x (columns) and y (rows)."""
    x, y = kernels.grid(k.shape[0])
    return float((k * x ** 2).sum()), float((k * y ** 2).sum())


@settings(max_examples=40, deadline=None)
@given(size=SIZES, sx=SIGMAS, sy=SIGMAS, theta=ANGLES, beta=st.floats(0.5, 4.0))
def test_every_kernel_sums_to_one_is_centred_and_point_symmetric(size: int, sx: float, sy: float, theta: float,
                                                                 beta: float) -> None:
    for k in (kernels.gaussian(size, sx, sy, theta), kernels.generalized(size, sx, sy, theta, beta),
              kernels.plateau(size, sx, sy, theta, beta), kernels.sinc(size, math.pi / 3 + beta / 10)):
        assert k.shape == (size, size)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # point-symmetric: no shift of the image
        assert np.unravel_index(np.argmax(k), k.shape) == (size // 2, size // 2)


@settings(max_examples=25, deadline=None)
@given(size=SIZES, sigma=SIGMAS, beta=st.floats(0.5, 4.0))
def test_isotropic_kernels_have_the_symmetries_of_the_square(size: int, sigma: float, beta: float) -> None:
    positive = (kernels.gaussian(size, sigma), kernels.generalized(size, sigma, sigma, 0.3, beta),
                kernels.plateau(size, sigma, sigma, 1.1, beta))
    for k in (*positive, kernels.sinc(size, 2.0)):  # an isotropic kernel ignores its angle
        np.testing.assert_allclose(k, k.T, atol=1e-15)
        np.testing.assert_allclose(k, k[::-1], atol=1e-15)
    assert all((k >= 0).all() for k in positive)  # only the sinc rings below zero (tails may underflow to 0)


def test_gaussian_variance_and_orientation() -> None:
    k = kernels.gaussian(41, 2.0)
    vx, vy = _moments(k)
    assert vx == pytest.approx(4.0, rel=1e-3) and vy == pytest.approx(4.0, rel=1e-3)
    wide = kernels.gaussian(41, 3.0, 1.0, 0.0)  # long along x
    vx, vy = _moments(wide)
    assert vx == pytest.approx(9.0, rel=1e-3) and vy == pytest.approx(1.0, rel=1e-3)
    turned = kernels.gaussian(41, 3.0, 1.0, math.pi / 2)  # the same, turned a quarter: long along y
    np.testing.assert_allclose(turned, wide.T, atol=1e-14)
    np.testing.assert_allclose(kernels.generalized(41, 2.0, 2.0, 0.0, 1.0), k, atol=1e-15)  # beta 1: Gaussian


def test_generalized_and_plateau_shapes() -> None:
    heavy, flat = kernels.generalized(21, 2.0, 2.0, 0.0, 0.5), kernels.generalized(21, 2.0, 2.0, 0.0, 4.0)
    c = 10
    assert heavy[c, c + 9] / heavy[c, c] > flat[c, c + 9] / flat[c, c]  # beta < 1: heavier tails
    assert flat[c, c + 1] / flat[c, c] > 0.99  # beta 4: a flat top
    p = kernels.plateau(21, 2.0, 2.0, 0.0, 1.0)
    assert p[c, c + 2] / p[c, c] == pytest.approx(0.5)  # 1 / (1 + q), q = (2 / 2)^2 = 1


def test_bessel_j1_and_the_sinc_kernel() -> None:
    known = {1.0: 0.44005058574493355, 10.0: 0.04347274616886144, 3.8317059702075125: 0.0, 50.0: -0.09751182812517113}
    for x, j in known.items():
        assert float(kernels.bessel_j1(np.array(x))) == pytest.approx(j, abs=1e-12)
    k = kernels.sinc(21, math.pi / 3)
    assert k.min() < -1e-4  # ringing: negative side lobes
    # ideal disc low-pass: its spectrum passes low frequencies and cuts high ones
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(128, 128))))
    assert spectrum[64, 64] == pytest.approx(1.0)
    assert spectrum[64, 64 + 128 // 2 - 1] < 0.1  # near Nyquist along x, above the cutoff pi / 3
    with pytest.raises(ValueError, match="cutoff"):
        kernels.sinc(21, 4.0)
    with pytest.raises(ValueError, match="odd"):
        kernels.gaussian(4, 1.0)


def _direct(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    p = k.shape[0] // 2
    padded = np.pad(img.astype(np.float64), ((p, p), (p, p), (0, 0)), mode="reflect")
    flipped = k[::-1, ::-1]  # convolution: the kernel turned half a turn
    h, w = img.shape[:2]
    return np.stack([[(padded[y:y + k.shape[0], x:x + k.shape[0]] * flipped[..., None]).sum((0, 1))
                      for x in range(w)] for y in range(h)])


def test_blur_is_the_reflect_padded_convolution() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((13, 17, 3)).astype(np.float32)
    k = kernels.gaussian(7, 2.0, 0.7, 0.5)
    np.testing.assert_allclose(blur.blur(img, k), _direct(img, k), atol=1e-5)
    np.testing.assert_allclose(blur.blur(img, kernels.pulse(9)), img, atol=1e-6)
    flat = np.full((20, 9, 3), 0.3, np.float32)  # narrower than the kernel: reflection repeats
    np.testing.assert_allclose(blur.blur(flat, kernels.sinc(21, 1.0)), flat, atol=1e-5)
    assert [blur.fast_length(n) for n in (1, 7, 212, 243, 251)] == [1, 8, 216, 243, 256]


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_resize_sizes_and_constants(mode: str) -> None:
    img = np.full((30, 40, 3), 0.25, np.float32)
    out = resize.resize(img, (13, 57), mode)
    assert out.shape == (13, 57, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    ramp = np.repeat(np.linspace(0, 1, 40, dtype=np.float32)[None, :, None], 3, axis=2).repeat(30, axis=0)
    half = resize.resize(ramp, (15, 20), mode)
    assert half[0, 0, 0] < half[0, 10, 0] < half[0, 19, 0]  # order kept


def test_gaussian_noise_statistics() -> None:
    img = np.full((256, 256, 3), 0.5, np.float32)
    n = noise.gaussian(img, 10.0, gray=False, rng=np.random.default_rng(1)) - img
    assert abs(n.mean()) < 1e-3 and n.std() == pytest.approx(10 / 255, rel=0.02)
    assert abs(np.corrcoef(n[..., 0].ravel(), n[..., 1].ravel())[0, 1]) < 0.02  # colour: independent channels
    g = noise.gaussian(img, 10.0, gray=True, rng=np.random.default_rng(1)) - img
    assert np.array_equal(g[..., 0], g[..., 2]) and g.std() == pytest.approx(10 / 255, rel=0.02)


@pytest.mark.parametrize("level,scale", [(0.4, 1.0), (0.1, 2.0), (0.8, 0.5)])
def test_poisson_noise_statistics(level: float, scale: float) -> None:
    img = np.full((256, 256, 3), level, np.float32)
    n = noise.poisson(img, scale, gray=False, rng=np.random.default_rng(2)) - img
    assert abs(n.mean()) < 3 * scale * math.sqrt(level / 255 / n.size)  # unbiased
    assert n.var() == pytest.approx(scale ** 2 * level / 255, rel=0.03)  # variance level / 255, times scale^2
    g = noise.poisson(img, scale, gray=True, rng=np.random.default_rng(2)) - img
    assert np.array_equal(g[..., 0], g[..., 1])
    assert noise.poisson(np.zeros((8, 8, 3), np.float32), 3.0, False, np.random.default_rng(0)).max() == 0.0


def test_jpeg_round_trip_error_falls_with_quality() -> None:
    img = random_image(96, 80, 3)
    errors = []
    for q in (10, 30, 60, 90, 100):
        out = jpeg.jpeg_uint8(img, q)
        assert out.shape == img.shape and out.dtype == np.uint8
        errors.append(float(np.mean((out.astype(np.float64) - img) ** 2)))
    assert errors == sorted(errors, reverse=True) and errors[0] > 4 * errors[-2]
    assert np.array_equal(jpeg.jpeg_uint8(img, 50), jpeg.jpeg_uint8(img, 50))  # deterministic
    f = jpeg.jpeg(img.astype(np.float32) / 255, 75)
    assert f.dtype == np.float32 and 0.0 <= f.min() and f.max() <= 1.0
    assert np.array_equal(jpeg.to_uint8(np.array([-0.1, 0.5, 1.2], np.float32)), [0, 128, 255])
    with pytest.raises(ValueError, match="quality"):
        jpeg.jpeg_uint8(img, 0)
