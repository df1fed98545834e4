"""The three evaluation protocols and the loop that scores a model on a dataset.

- ``benchmark`` (paper, Set5/Set14/B100/Urban100): Y-channel PSNR, shave = scale; SSIM on
  BT.601 luma, shave = scale.
- ``div2k`` (paper, DIV2K validation): RGB PSNR, shave = scale + 6; SSIM per RGB channel with
  the same shave (the paper reports no DIV2K SSIM; this is our definition).
- Both paper protocols take the LR input from the dataset's MATLAB-bicubic files for x2-x4
  (HR cropped top-left to LR size x scale) and make it with PIL bicubic from the HR cropped to
  a multiple of the scale otherwise; the prediction is clamped to [0, 1] and scored as float.
- ``mmagic`` (OpenMMLab / mmediting 0.x, the seed card's 26.87): LR = PIL bicubic of the GT
  cropped to a multiple of the scale at every scale, prediction rounded to uint8, RGB PSNR and
  per-channel SSIM on 0..255 with crop = scale.
Every dataset score is the mean of the per-image scores.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liif.data.eval_sets import MATLAB_SCALES, DatasetFolder
from liif.data.resize import resize_uint8
from liif.errors import LiifError
from liif.eval import metrics
from liif.imaging import as_float_chw, read_rgb
from liif.render import Window


@dataclass(frozen=True)
class Protocol:
    name: str
    y_channel: bool
    extra_shave: int
    matlab_lr: bool  # read LR_bicubic/X<k> for k in MATLAB_SCALES
    quantize: bool  # round the prediction to uint8 before scoring
    ssim: Callable[..., float]
    summary: str

    def shave(self, scale: int) -> int:
        return scale + self.extra_shave


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol("benchmark", True, 0, True, False, metrics.ssim_y,
                 "paper benchmark: Y channel (/256 coefficients), shave = scale, MATLAB LR for x2-x4"),
        Protocol("div2k", False, 6, True, False, metrics.ssim_rgb,
                 "paper DIV2K: RGB, shave = scale + 6, MATLAB LR for x2-x4"),
        Protocol("mmagic", False, 0, False, True, metrics.ssim_rgb,
                 "OpenMMLab (mmediting 0.x): RGB, crop = scale, PIL-bicubic LR, uint8-rounded output"),
    ]
}


def protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise LiifError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def default_protocol(ds: DatasetFolder) -> str:
    """div2k for DIV2K, benchmark for everything else (spec section 7)."""
    return "div2k" if ds.key == "div2k" else "benchmark"


def parse_scales(text: str) -> list[int]:
    try:
        scales = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise LiifError(f"--scales must be comma-separated integers, e.g. 2,3,4,6,8; got {text!r}") from None
    if not scales or any(s < 1 for s in scales):
        raise LiifError(f"--scales must list integers >= 1; got {text!r}")
    return scales


@dataclass
class ImageScore:
    dataset: str
    scale: int
    protocol: str
    image: str
    lr_source: str  # "matlab" (dataset file), "files" (--lr-dir) or "pil"
    height: int  # scored HR size before shaving
    width: int
    psnr: float
    ssim: float


def uses_matlab_lr(p: Protocol, scale: int, lr: str) -> bool:
    return p.matlab_lr and lr == "auto" and scale in MATLAB_SCALES


def reads_lr_files(ds: DatasetFolder, p: Protocol, scale: int, lr: str) -> bool:
    """LR from files: an LR folder given for this scale (``--lr-dir``, any protocol), or MATLAB LR files."""
    return scale in ds.lr_dirs or uses_matlab_lr(p, scale, lr)


def check_inputs(ds: DatasetFolder, scales: Sequence[int], p: Protocol, lr: str) -> None:
    """Fail before any rendering when a scale that reads LR files has no LR folder."""
    for s in scales:
        if s in ds.lr_dirs and not ds.lr_dirs[s].is_dir():
            raise LiifError(f"--lr-dir {ds.lr_dirs[s]} is not a folder")
        if uses_matlab_lr(p, s, lr) and not ds.lr_dir(s).is_dir():
            raise LiifError(
                f"{ds.lr_dir(s)} is missing: the {p.name} protocol reads the dataset's MATLAB-bicubic LR "
                f"files at x{s}. Add that folder (e.g. `liif data fetch {ds.key or 'NAME'}`), or pass "
                f"--lr pil to make the LR with PIL bicubic (numbers then differ from the paper's)")


def make_pair(ds: DatasetFolder, hr_path: Path, scale: int, p: Protocol, lr: str = "auto",
              gt_mod: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(LR uint8 (h, w, 3), HR uint8 (h*scale, w*scale, 3), LR source) for one image."""
    hr = read_rgb(hr_path)
    if gt_mod:
        hr = hr[: hr.shape[0] - hr.shape[0] % gt_mod, : hr.shape[1] - hr.shape[1] % gt_mod]
    H, W = hr.shape[:2]
    if reads_lr_files(ds, p, scale, lr):
        lr_path = ds.lr_file(hr_path, scale)
        if lr_path is None:
            raise LiifError(f"no LR image for {hr_path.name} in {ds.lr_dir(scale)}")
        low = read_rgb(lr_path)
        h, w = low.shape[:2]
        if not (h * scale <= H < (h + 1) * scale and w * scale <= W < (w + 1) * scale):
            raise LiifError(f"HR/LR size mismatch at x{scale}: {hr_path} is {W}x{H} but {lr_path} is {w}x{h} "
                            f"(expected {W // scale}x{H // scale})")
        return low, np.ascontiguousarray(hr[: h * scale, : w * scale]), "files" if scale in ds.lr_dirs else "matlab"
    h, w = H // scale, W // scale
    if h < 1 or w < 1:
        raise LiifError(f"{hr_path} ({W}x{H}) is too small for x{scale}")
    hr = np.ascontiguousarray(hr[: h * scale, : w * scale])
    return resize_uint8(hr, (h, w)), hr, "pil"


def predict(up: object, lr: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Render the full output with the upscaler's renderer, clamped to [0, 1], as (3, H, W)."""
    out = up.render_rgb(lr.to(up.device), out_hw, Window.full(out_hw), up.precision)  # type: ignore[attr-defined]
    return torch.from_numpy(out).permute(2, 0, 1).clamp_(0, 1)


def score(sr: torch.Tensor, hr: torch.Tensor, scale: int, p: Protocol,
          png: str | None = None) -> tuple[float, float]:
    """PSNR/SSIM of ``sr`` under ``p``; ``png`` (round|truncate) scores it as a saved 8-bit PNG would be."""
    if png is not None:
        sr = metrics.quantize_uint8(sr, png)
    elif p.quantize:
        sr = metrics.quantize_uint8(sr)
    shave = p.shave(scale)
    return metrics.psnr(sr, hr, shave=shave, y_channel=p.y_channel), p.ssim(sr, hr, shave=shave)


def evaluate(up: object, ds: DatasetFolder, scales: Sequence[int], p: Protocol, lr: str = "auto",
             gt_mod: int | None = None, progress: bool = False,
             images: Sequence[Path] | None = None, png: str | None = None) -> list[ImageScore]:
    """Score every image of ``ds`` at every scale, batch 1, with the upscaler's renderer
    (``png``: as saved to an 8-bit PNG, rounded or truncated, instead of the float prediction)."""
    check_inputs(ds, scales, p, lr)
    files = list(images) if images is not None else ds.hr_files
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files) * len(scales), desc=f"{ds.name} ({p.name})", unit="img")
    out: list[ImageScore] = []
    try:
        for s in scales:
            for f in files:
                low, high, src = make_pair(ds, f, s, p, lr, gt_mod)
                hr_t = as_float_chw(high)
                sr = predict(up, as_float_chw(low), (high.shape[0], high.shape[1]))
                ps, ss = score(sr, hr_t, s, p, png)
                out.append(ImageScore(ds.name, s, p.name, f.name, src, high.shape[0], high.shape[1], ps, ss))
                if bar is not None:
                    bar.set_postfix_str(f"x{s} {f.name}")
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return out


@dataclass
class Summary:
    dataset: str
    scale: int
    protocol: str
    psnr: float
    ssim: float
    n_images: int
    lr_source: str


def summarize(scores: Sequence[ImageScore]) -> list[Summary]:
    """Mean of per-image PSNR and SSIM for each (dataset, scale, protocol), in first-seen order."""
    groups: dict[tuple[str, int, str], list[ImageScore]] = {}
    for s in scores:
        groups.setdefault((s.dataset, s.scale, s.protocol), []).append(s)
    result = []
    for (name, scale, prot), items in groups.items():
        srcs = sorted({i.lr_source for i in items})
        result.append(Summary(name, scale, prot, _mean([i.psnr for i in items]), _mean([i.ssim for i in items]),
                              len(items), "+".join(srcs)))
    return result


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else math.nan
