"""JPEG compression: Pillow's encoder and decoder (libjpeg), 4:2:0 chroma subsampling as cameras and
the web use it, so blocks, ringing and colour bleeding are the ones real files carry."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_uint8(img: np.ndarray, quality: int) -> np.ndarray:
    """uint8 (H, W, 3) -> the same image encoded at ``quality`` (1-100) and decoded, uint8 (H, W, 3)."""
    if img.dtype != np.uint8:
        raise TypeError(f"jpeg_uint8 expects uint8, got {img.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")).copy()


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float in [0, 1] (clamped) -> uint8, rounded."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> rounded to 8 bits, JPEG-compressed at ``quality``, float32 again."""
    return jpeg_uint8(to_uint8(img), quality).astype(np.float32) / np.float32(255.0)
