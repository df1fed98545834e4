"""Image-quality metrics exactly as the published LIIF numbers define them.

PSNR (paper, spec section 7): on images in [0, 1]; for the ``benchmark`` protocol the RGB
*difference* is turned into a luma difference with (65.738, 129.057, 25.064) / 256 (no offset,
so the offset would cancel anyway); ``shave`` pixels are dropped on every side; PSNR =
-10 log10(mean squared difference). PSNR on 0..255 images with 20 log10(255 / RMSE) is the same
number, so the OpenMMLab protocol reuses this function after rounding the prediction to uint8.

SSIM (Wang et al. 2004, the form used by the EDSR/RCAN MATLAB scripts and by OpenMMLab):
Gaussian window 11x11 with sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 255,
"valid" filtering (no padding), mean of the SSIM map; for colour input each channel is scored
separately and the channel scores are averaged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAPER_Y = (65.738 / 256, 129.057 / 256, 25.064 / 256)  # official calc_psnr luma weights, no offset
BT601_Y = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr on [0, 1] input, result in 0..255 (+16)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def shave_border(t: torch.Tensor, shave: int) -> torch.Tensor:
    """Drop ``shave`` pixels from each side of the last two dimensions."""
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave == 0:
        return t
    h, w = t.shape[-2:]
    if h <= 2 * shave or w <= 2 * shave:
        raise ValueError(f"image {w}x{h} (WxH) is too small to shave {shave} pixels from each side")
    return t[..., shave:h - shave, shave:w - shave]


def _check_pair(sr: torch.Tensor, hr: torch.Tensor) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"prediction {tuple(sr.shape)} and ground truth {tuple(hr.shape)} differ in shape")
    if sr.dim() != 3 or sr.shape[0] != 3:
        raise ValueError(f"expected (3, H, W) images, got {tuple(sr.shape)}")


def psnr(sr: torch.Tensor, hr: torch.Tensor, *, shave: int, y_channel: bool) -> float:
    """PSNR in dB of float (3, H, W) images in [0, 1]; ``inf`` when they are identical."""
    _check_pair(sr, hr)
    diff = sr.double() - hr.double()
    if y_channel:
        diff = (diff * diff.new_tensor(PAPER_Y).view(3, 1, 1)).sum(0)
    mse = shave_border(diff, shave).pow(2).mean().item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def y_bt601(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> (H, W) luma in 16..235, as MATLAB's rgb2ycbcr (Y channel) x 255."""
    return 16.0 + (rgb.double() * rgb.new_tensor(BT601_Y, dtype=torch.float64).view(3, 1, 1)).sum(0)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, 1, H, W) without padding ('valid')."""
    g = _gaussian_1d().to(x.device)
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 255.0) -> float:
    """Mean SSIM of (H, W) or (C, H, W) images on a 0..data_range scale (channels averaged)."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 2:
        a, b = a[None], b[None]
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(a.shape)}")
    x, y = a.double()[:, None], b.double()[:, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _filter_valid(x), _filter_valid(y)
    sxx = _filter_valid(x * x) - mx * mx
    syy = _filter_valid(y * y) - my * my
    sxy = _filter_valid(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(dim=(1, 2, 3)).mean().item()


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, *, shave: int) -> float:
    """SSIM of the paper-style benchmarks: BT.601 luma on 0..255 (with the +16 offset, as the
    EDSR/RCAN MATLAB evaluation), ``shave`` pixels dropped, Gaussian window, valid region."""
    _check_pair(sr, hr)
    return ssim(shave_border(y_bt601(sr), shave), shave_border(y_bt601(hr), shave))


def ssim_rgb(sr: torch.Tensor, hr: torch.Tensor, *, shave: int) -> float:
    """SSIM per RGB channel on 0..255, ``shave`` pixels dropped, channels averaged."""
    _check_pair(sr, hr)
    return ssim(shave_border(sr.double() * 255, shave), shave_border(hr.double() * 255, shave))


def quantize_uint8(t: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """Float image in [0, 1] -> the same on 1/255 steps, rounded (OpenMMLab 0.x ``tensor2img``, our
    PNGs) or truncated (the official demo's PNGs)."""
    q = t.clamp(0, 1) * 255
    return (q.round() if mode == "round" else q.floor()) / 255
