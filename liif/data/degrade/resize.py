"""Resizing float images: area, bilinear or bicubic (Pillow's filters on 32-bit float planes: they filter
over the whole footprint when shrinking, so no aliasing beyond what each filter's shape lets through)."""
from __future__ import annotations

import numpy as np
from PIL import Image

MODES = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resize(img: np.ndarray, out_hw: tuple[int, int], mode: str) -> np.ndarray:
    """float32 (H, W, C) -> float32 (h, w, C) with ``mode`` (area, bilinear or bicubic); no clamping."""
    h, w = out_hw
    if h < 1 or w < 1:
        raise ValueError(f"resize target must be at least 1 x 1, got {w} x {h}")
    if img.shape[:2] == (h, w):
        return img.astype(np.float32, copy=False)
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
                         .resize((w, h), MODES[mode])) for c in range(img.shape[2])]
    return np.stack(planes, axis=-1)
