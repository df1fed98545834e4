"""Arrays and tensors in and out: uint8 tensors to float, and the API's NumPy arrays to the channel
policy's ``Decoded`` and back."""
from __future__ import annotations

import numpy as np
import torch

from liif.errors import LiifError
from liif.imaging.channels import Decoded, quantize


def as_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; a float tensor keeps its values (cast to float32, a no-op for float32)."""
    return img.float() / 255 if img.dtype == torch.uint8 else img.float()


def as_float_chw(a: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) array -> float32 (C, H, W) tensor in [0, 1]. The array is copied first, so
    read-only arrays (the mapped image cache) and negative-stride views (flips) are fine."""
    return as_float(torch.from_numpy(np.array(a)).permute(2, 0, 1))


def decode_array(a: np.ndarray) -> Decoded:
    """A uint8/uint16/float32 array (H, W[, 1|3|4]) -> the channel policy's ``Decoded`` (float arrays
    are clipped to [0, 1] and marked 32-bit)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise LiifError(f"array input must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {a.shape}")
    if a.size == 0:
        raise LiifError(f"array input is empty: {a.shape}")
    if a.dtype == np.uint8:
        f, bits = a, 8
    elif a.dtype == np.uint16:
        f, bits = a.astype(np.float32) / 65535.0, 16
    elif a.dtype in (np.float32, np.float64):
        if not np.isfinite(a).all():
            raise LiifError("array input contains NaN or infinite values")
        f, bits = np.clip(a.astype(np.float32), 0, 1), 32
    else:
        raise LiifError(f"array dtype must be uint8, uint16 or float32, got {a.dtype}")
    if a.ndim == 2:
        return Decoded(np.repeat(f[..., None], 3, axis=2), None, True, bits)
    alpha = f[..., 3] if a.shape[2] == 4 else None
    if alpha is not None and bits == 8:
        alpha = alpha.astype(np.float32) / 255.0
    return Decoded(np.ascontiguousarray(f[..., :3]), alpha, False, bits)


def encode_array(pixels: np.ndarray, alpha: np.ndarray | None, like: np.ndarray, mode: str = "round") -> np.ndarray:
    """Finished pixels (h, w, 1 or 3) (+ float alpha) -> the layout and dtype of the input array."""
    if alpha is not None:
        a = (quantize(alpha, 16 if like.dtype == np.uint16 else 8, mode) if like.dtype in (np.uint8, np.uint16)
             else np.clip(alpha, 0, 1))
        pixels = np.concatenate([pixels, a.astype(pixels.dtype)[..., None]], -1)
    if like.dtype not in (np.uint8, np.uint16):
        pixels = pixels.astype(like.dtype)
    return pixels[..., 0] if like.ndim == 2 else pixels
