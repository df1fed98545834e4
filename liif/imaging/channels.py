"""The channel and quantisation policy: a PIL image -> float (or uint8) RGB + alpha, and finished
pixels back to the policy's mode.

- grayscale (L, I;16, I): channels are replicated to RGB for the model and the result is
  converted back to one channel with ITU-R 601 luma (what Pillow's convert('L') uses);
- alpha (RGBA, LA, their premultiplied RGBa and La, palette with transparency): colour goes
  through LIIF (premultiplied colour is un-premultiplied first), alpha is resized with bicubic
  (Pillow) to the output size and re-attached;
- 16-bit grayscale PNGs are read at full precision and written back as 16-bit PNGs; Pillow
  decodes 16-bit-per-channel colour PNGs to 8 bits, so those come out as 8-bit PNGs.
- quantisation of the float output: clamp to [0, 1], scale to 255 (or 65535) and round to nearest.
  The official demo truncates instead (x255, then floor), which darkens every output by half a
  level on average; ``quantize="truncate"`` (``--quantize truncate``) keeps that for byte parity
  with the official PNGs.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from liif.errors import LiifError
from liif.imaging.files import MultiFrameInput

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Decoded:
    rgb: np.ndarray  # (H, W, 3): uint8 for 8-bit sources (kept compact), else float32 in [0, 1]
    alpha: np.ndarray | None  # float32 (H, W) in [0, 1]
    gray: bool
    bits: int  # 8 or 16

    @property
    def hw(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


def prepare(im: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: EXIF orientation applied (the result needs no tag), and
    only the first frame of an animated or multi-page image, with a :class:`MultiFrameInput` warning.
    Returns ``im`` itself when there is nothing to do; check the pixel limit before calling this
    (reading EXIF may decode a PNG)."""
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        name = getattr(im, "filename", "") or "the image"
        warnings.warn(f"{name} has {frames} frames; only the first is upscaled", MultiFrameInput, stacklevel=2)
        im.seek(0)
        im = im.copy()  # a single-frame image: calling prepare again warns no more
    if im.getexif().get(0x0112, 1) not in (1, None):  # 0x0112: EXIF Orientation
        im = ImageOps.exif_transpose(im)
    return im


def decode(im: Image.Image) -> Decoded:
    """PIL image of any common mode -> float RGB, optional alpha, and the output policy."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "La":  # premultiplied gray + alpha: Pillow converts it to LA only (un-premultiplied)
        im = im.convert("LA")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        g = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0, 1)
        return Decoded(np.repeat(g[..., None], 3, axis=2), None, True, 16)
    if mode == "F":
        g = np.asarray(im, dtype=np.float32)
        if not np.isfinite(g).all():
            raise LiifError("image contains NaN or infinite values")
        g = np.clip(g, 0, 1)
        return Decoded(np.repeat(g[..., None], 3, axis=2), None, True, 16)
    if mode in ("1", "L", "LA"):
        la = np.asarray(im.convert("LA"))
        alpha = la[..., 1].astype(np.float32) / 255.0 if mode == "LA" else None
        return Decoded(np.repeat(la[..., :1], 3, axis=2), alpha, True, 8)
    if mode in ("RGBA", "RGBa", "PA"):  # RGBa (premultiplied) is un-premultiplied by the conversion
        rgba = np.asarray(im.convert("RGBA"))
        return Decoded(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0, False, 8)
    return Decoded(np.asarray(im.convert("RGB")), None, False, 8)


def resize_alpha(alpha: np.ndarray, out_hw: tuple[int, int],
                 window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Bicubic (Pillow) resize of float alpha (h, w) to ``out_hw``, clipped to [0, 1].

    ``window=(y, x, height, width)``: only that window of the resized alpha, computed alone from
    the matching source box (Pillow's ``box``), so memory follows the window, not the virtual
    output; it equals the crop of the full resize up to float rounding."""
    im = Image.fromarray(alpha.astype(np.float32), mode="F")
    H, W = out_hw
    if window is None:
        out = im.resize((W, H), Image.Resampling.BICUBIC)
    else:
        y, x, h, w = window
        sy, sx = im.height / H, im.width / W
        out = im.resize((w, h), Image.Resampling.BICUBIC, box=(x * sx, y * sy, (x + w) * sx, (y + h) * sy))
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


QUANTIZE = ("round", "truncate")


def quantize(x: np.ndarray, bits: int = 8, mode: str = "round") -> np.ndarray:
    """Clamp to [0, 1] and map to uint8 or uint16: round to nearest, or truncate (official demo)."""
    top = 255.0 if bits == 8 else 65535.0
    q = np.clip(x, 0.0, 1.0) * np.float32(top)
    if mode == "round":
        q = np.rint(q, out=q)
    elif mode != "truncate":
        raise LiifError(f"unknown quantize mode {mode!r}; expected one of {', '.join(QUANTIZE)}")
    return q.astype(np.uint8 if bits == 8 else np.uint16)


def quantize_tensor(x: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """:func:`quantize` to uint8 for a tensor (used on the GPU): the same clamp, scale and rounding."""
    q = x.clamp(0.0, 1.0) * 255.0
    if mode == "round":
        q = q.round_()  # half to even, as np.rint
    elif mode != "truncate":
        raise LiifError(f"unknown quantize mode {mode!r}; expected one of {', '.join(QUANTIZE)}")
    return q.to(torch.uint8)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return rgb @ LUMA


def finisher(gray: bool, bits: int, mode: str = "round") -> tuple[int, np.dtype, Callable[[np.ndarray], np.ndarray]]:
    """How a float RGB tile becomes output pixels: (channels, dtype, tile -> (h, w, channels))."""
    if bits in (8, 16):
        dtype = np.dtype(np.uint8 if bits == 8 else np.uint16)
        if gray:
            return 1, dtype, lambda t: quantize(to_gray(t), bits, mode)[..., None]
        return 3, dtype, lambda t: quantize(t, bits, mode)
    if gray:
        return 1, np.dtype(np.float32), lambda t: np.clip(to_gray(t), 0, 1)[..., None]
    return 3, np.dtype(np.float32), lambda t: np.clip(t, 0, 1)


def compose(pixels: np.ndarray, alpha: np.ndarray | None, bits: int, mode: str = "round") -> Image.Image:
    """Finished pixels (h, w, 1 or 3) (+ resized float alpha) -> PIL image in the policy's mode."""
    gray = pixels.shape[2] == 1
    if gray and bits == 16 and alpha is None:
        return Image.fromarray(pixels[..., 0])
    if alpha is not None:
        a = quantize(alpha, 8, mode)[..., None]
        if bits == 16:
            pixels = (pixels >> 8).astype(np.uint8)
        return Image.fromarray(np.concatenate([pixels, a], -1), mode="LA" if gray else "RGBA")
    return Image.fromarray(pixels[..., 0] if gray else pixels, mode="L" if gray else "RGB")
