"""The down-sampler LIIF is trained and evaluated with: Pillow's bicubic on uint8 images.

The official route converts a float tensor to a PIL image (x255, to uint8), resizes it with
``Image.BICUBIC`` (antialiased: the kernel widens with the reduction factor, a = -0.5) and
converts back to float /255. Images that came from uint8 files go through this losslessly,
so we resize the uint8 array directly and never depend on torchvision.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_uint8(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) or (H, W) -> uint8 of size out_hw (height, width), PIL bicubic."""
    if img.dtype != np.uint8:
        raise TypeError(f"resize_uint8 expects uint8, got {img.dtype}")
    h, w = out_hw
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))
