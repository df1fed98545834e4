"""Known-value tests for PSNR (RGB / Y, shave) and SSIM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from liif.eval import metrics


def _img(h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g, dtype=torch.float64) * 0.8 + 0.1


def test_psnr_identical_is_inf() -> None:
    a = _img()
    assert metrics.psnr(a, a.clone(), shave=2, y_channel=True) == math.inf
    assert metrics.psnr(a, a.clone(), shave=0, y_channel=False) == math.inf


def test_psnr_rgb_constant_offset() -> None:
    hr = _img()
    # an offset of 0.1 on every channel: MSE 0.01 -> exactly 20 dB
    assert metrics.psnr(hr + 0.1, hr, shave=0, y_channel=False) == pytest.approx(20.0, abs=1e-9)
    # 1/255 on every value is PSNR 20 log10(255) = 48.1308 dB
    assert metrics.psnr(hr + 1 / 255, hr, shave=3, y_channel=False) == pytest.approx(20 * math.log10(255), abs=1e-5)


def test_psnr_y_uses_official_coefficients_without_offset() -> None:
    hr = _img()
    d = 0.05
    k = (65.738 + 129.057 + 25.064) / 256
    assert metrics.psnr(hr + d, hr, shave=0, y_channel=True) == pytest.approx(-20 * math.log10(d * k), abs=1e-7)
    for c, coef in enumerate((65.738, 129.057, 25.064)):
        sr = hr.clone()
        sr[c] += d
        assert metrics.psnr(sr, hr, shave=0, y_channel=True) == pytest.approx(-20 * math.log10(d * coef / 256),
                                                                                abs=1e-7)
    # a colour change with zero luma change is invisible to the Y protocol
    sr = hr.clone()
    sr[0] += 0.01 * 129.057
    sr[1] -= 0.01 * 65.738
    assert metrics.psnr(sr, hr, shave=0, y_channel=True) > 120


def test_psnr_shave_drops_exactly_the_border() -> None:
    hr = _img(20, 30)
    sr = hr.clone()
    s = 4
    sr[:, :s] += 0.3
    sr[:, -s:] -= 0.3
    sr[:, :, :s] += 0.2
    sr[:, :, -s:] += 0.2
    assert metrics.psnr(sr, hr, shave=s, y_channel=False) == math.inf
    assert metrics.psnr(sr, hr, shave=s - 1, y_channel=False) < 40
    # one wrong interior value: MSE = e^2 / (3 * (H - 2s) * (W - 2s))
    sr = hr.clone()
    sr[1, 10, 15] += 0.5
    want = -10 * math.log10(0.25 / (3 * (20 - 2 * s) * (30 - 2 * s)))
    assert metrics.psnr(sr, hr, shave=s, y_channel=False) == pytest.approx(want, abs=1e-5)


def test_psnr_on_uint8_equals_0_255_formula() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 16, 16)).astype(np.float64)
    b = np.clip(a + rng.integers(-9, 10, a.shape), 0, 255)
    mse = np.mean((a[:, 2:-2, 2:-2] - b[:, 2:-2, 2:-2]) ** 2)
    want = 20 * math.log10(255 / math.sqrt(mse))
    got = metrics.psnr(torch.from_numpy(a) / 255, torch.from_numpy(b) / 255, shave=2, y_channel=False)
    assert got == pytest.approx(want, abs=1e-9)


def test_psnr_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(_img(10, 10), _img(10, 12), shave=0, y_channel=False)


def test_quantize_rounds_to_nearest_level() -> None:
    t = torch.tensor([0.0, 0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 1.2, -0.1])
    assert (metrics.quantize_uint8(t) * 255).round().tolist() == [0, 0, 1, 255, 0]


def test_y_bt601_matches_matlab_rgb2ycbcr() -> None:
    rgb = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]).view(3, 1, 4)
    assert metrics.y_bt601(rgb).flatten().tolist() == pytest.approx([235.0, 16.0, 16 + 128.553, 16 + 24.966])


def test_ssim_identical_is_one() -> None:
    a = _img(32, 32) * 255
    assert metrics.ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_closed_form() -> None:
    # zero variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every position
    a, b = 100.0, 140.0
    c1 = (0.01 * 255) ** 2
    got = metrics.ssim(torch.full((16, 16), a), torch.full((16, 16), b))
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_ssim_matches_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 255, (40, 37))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    want = skm.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert metrics.ssim(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(want, abs=1e-9)
    # colour: channels scored separately and averaged
    a3 = rng.uniform(0, 255, (3, 30, 33))
    b3 = np.clip(a3 + rng.normal(0, 15, a3.shape), 0, 255)
    want3 = np.mean([skm.structural_similarity(a3[c], b3[c], data_range=255, gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False) for c in range(3)])
    assert metrics.ssim(torch.from_numpy(a3), torch.from_numpy(b3)) == pytest.approx(want3, abs=1e-9)


def test_ssim_protocol_variants_shave_and_scale() -> None:
    hr = _img(40, 40)
    sr = (hr + 0.02 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    s = 3
    want_y = metrics.ssim(metrics.y_bt601(sr)[s:-s, s:-s], metrics.y_bt601(hr)[s:-s, s:-s])
    assert metrics.ssim_y(sr, hr, shave=s) == pytest.approx(want_y, abs=1e-12)
    want_rgb = np.mean([metrics.ssim(sr[c, s:-s, s:-s] * 255, hr[c, s:-s, s:-s] * 255) for c in range(3)])
    assert metrics.ssim_rgb(sr, hr, shave=s) == pytest.approx(want_rgb, abs=1e-12)
    assert 0.5 < metrics.ssim_rgb(sr, hr, shave=s) < 1.0
