"""The down-sampler LIIF is trained and evaluated with: Pillow's bicubic on uint8 images.

The official route converts a float tensor to a PIL image (x255, to uint8), resizes it with
``Image.BICUBIC`` (antialiased: the kernel widens with the reduction factor, a = -0.5) and
converts back to float /255. Images that came from uint8 files go through this losslessly,
so we resize the uint8 array directly and never depend on torchvision.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def resize_uint8(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) or (H, W) -> uint8 of size out_hw (height, width), PIL bicubic."""
    if img.dtype != np.uint8:
        raise TypeError(f"resize_uint8 expects uint8, got {img.dtype}")
    h, w = out_hw
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """Float (3, H, W) in [0, 1] -> uint8 (H, W, 3), rounding to nearest."""
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def resize_tensor(t: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Float (3, H, W) in [0, 1] holding uint8 values -> PIL-bicubic resized float (3, h, w) in [0, 1]."""
    out = resize_uint8(to_uint8(t), out_hw)
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255
