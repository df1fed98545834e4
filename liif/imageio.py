"""Reading images into float RGB (+ alpha) and writing PNGs atomically.

Policies (also in the README):
- grayscale (L, I;16, I): channels are replicated to RGB for the model and the result is
  converted back to one channel with ITU-R 601 luma (what Pillow's convert('L') uses);
- alpha (RGBA, LA, palette with transparency): colour goes through LIIF, alpha is resized
  with bicubic (Pillow) to the output size and re-attached;
- 16-bit grayscale PNGs are read at full precision and written back as 16-bit PNGs; Pillow
  decodes 16-bit-per-channel colour PNGs to 8 bits, so those come out as 8-bit PNGs.
- quantisation of the float output: clamp to [0, 1], scale to 255 (or 65535) and round to nearest.
  The official demo truncates instead (x255, then floor), which darkens every output by half a
  level on average; ``quantize="truncate"`` (``--quantize truncate``) keeps that for byte parity
  with the official PNGs.
"""
from __future__ import annotations

import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from liif import limits
from liif.errors import LiifError
from liif.fileio import atomic_path

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}  # what `liif upscale` reads


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The images directly in ``folder`` (by :data:`IMAGE_SUFFIXES`, any case), sorted by name;
    hidden files (``.name``, our temp files among them) and subfolders are skipped. None is a
    one-line LiifError."""
    p = Path(folder)
    try:
        files = sorted(f for f in p.iterdir()
                       if not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    except OSError as e:
        raise LiifError(f"cannot list folder {p}: {e.strerror or e}") from None
    if not files:
        raise LiifError(f"no images in folder {p} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}; "
                        "hidden files are skipped)")
    return files


@dataclass
class Decoded:
    rgb: np.ndarray  # (H, W, 3): uint8 for 8-bit sources (kept compact), else float32 in [0, 1]
    alpha: np.ndarray | None  # float32 (H, W) in [0, 1]
    gray: bool
    bits: int  # 8 or 16

    @property
    def hw(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


class MultiFrameInput(UserWarning):
    """An animated or multi-page image: only its first frame is used."""


def open_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image.Image:
    """Open ``path``, check its size against the input pixel limit on the header alone (before a
    single pixel is decoded), then decode it; any problem becomes a one-line LiifError.

    ``max_pixels`` defaults to :func:`liif.limits.max_input_pixels` (``LIIF_MAX_INPUT_PIXELS``)."""
    p = Path(path)
    limit = limits.max_input_pixels() if max_pixels is None else max_pixels
    if not p.exists():
        raise LiifError(f"input not found: {p}")
    if not p.is_file():
        raise LiifError(f"input is not a file: {p}")
    saved = Image.MAX_IMAGE_PIXELS
    # Our header check, right below, replaces Pillow's bomb check (which would refuse or warn at its
    # own size) for this open only: the process keeps Pillow's default elsewhere (the viewer's).
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(p)  # reads the header only
    except UnidentifiedImageError:
        raise LiifError(f"not an image (or an unsupported format): {p}") from None
    except Image.DecompressionBombError as e:  # Pillow's own hard limit, hit while opening
        raise LiifError(f"{p}: {e} (the input limit is {limit:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise LiifError(f"cannot decode {p} (truncated or corrupt?): {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        limits.check_input((im.height, im.width), limit, str(p))
        im.load()
    except LiifError:
        im.close()
        raise
    except Image.DecompressionBombError as e:
        im.close()
        raise LiifError(f"{p}: {e} (the input limit is {limit:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as e:
        im.close()
        raise LiifError(f"cannot decode {p} (truncated or corrupt?): {e}") from None
    return im


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
    if mode in ("RGBA", "RGBa", "PA", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        return Decoded(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0, False, 8)
    return Decoded(np.asarray(im.convert("RGB")), None, False, 8)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a dataset image to a writable uint8 RGB array (H, W, 3); Pillow converts grayscale,
    palette and alpha. Unlike :func:`open_image` (user inputs) it applies no pixel limit beyond
    Pillow's own and no EXIF rotation: dataset files are used as stored, as the official code does."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except OSError as e:
        raise LiifError(f"cannot decode image {path}: {e}") from None


def as_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; a float tensor keeps its values (cast to float32, a no-op for float32)."""
    return img.float() / 255 if img.dtype == torch.uint8 else img.float()


def as_float_chw(a: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) array -> float32 (C, H, W) tensor in [0, 1]. The array is copied first, so
    read-only arrays (the mapped image cache) and negative-stride views (flips) are fine."""
    return as_float(torch.from_numpy(np.array(a)).permute(2, 0, 1))


def png_bit_depth(path: str | os.PathLike[str]) -> int | None:
    """Bit depth from a PNG header (None for other formats)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != PNG_SIGNATURE or len(head) < 25:
        return None
    return struct.unpack(">B", head[24:25])[0]


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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


class PngWriter:
    """Write a PNG band of rows by band of rows, so the image never has to be whole in memory
    (Pillow cannot stream PNG rows). Standard chunks: signature, IHDR, IDAT from one zlib stream
    (each row with the PNG "Up" filter, computed with NumPy), IEND, a CRC-32 per chunk.
    Rows are (n, width, channels) uint8 or uint16 (16-bit, written big-endian)."""

    def __init__(self, f: BinaryIO, width: int, height: int, channels: int, bits: int = 8, level: int = 6) -> None:
        if channels not in PNG_COLOR_TYPES or bits not in (8, 16) or width <= 0 or height <= 0:
            raise LiifError(f"cannot write a PNG of {width}x{height}, {channels} channels, {bits} bits")
        self.f, self.width, self.height, self.channels, self.bits = f, width, height, channels, bits
        self.rows_written = 0
        self.prev: np.ndarray | None = None  # the previous row's bytes, for the Up filter
        self.z = zlib.compressobj(level)
        f.write(PNG_SIGNATURE)
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, PNG_COLOR_TYPES[channels], 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    def write(self, rows: np.ndarray) -> None:
        n = rows.shape[0]
        if rows.shape[1:] != (self.width, self.channels) or self.rows_written + n > self.height:
            raise LiifError(f"PNG rows of shape {rows.shape} do not fit a {self.width}x{self.height} image")
        raw = np.ascontiguousarray(rows, dtype=">u2" if self.bits == 16 else np.uint8).view(np.uint8)
        raw = raw.reshape(n, -1)
        filtered = np.empty((n, raw.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # Up: each byte minus the byte above (modulo 256); above the first row is 0
        filtered[:, 1:] = raw
        filtered[1:, 1:] -= raw[:-1]
        if self.prev is not None:
            filtered[0, 1:] -= self.prev
        self.prev = raw[-1].copy()
        data = self.z.compress(filtered.tobytes())
        del filtered
        if data:
            self._chunk(b"IDAT", data)
        self.rows_written += n

    def close(self) -> None:
        if self.rows_written != self.height:
            raise LiifError(f"PNG got {self.rows_written} of its {self.height} rows")
        self._chunk(b"IDAT", self.z.flush())
        self._chunk(b"IEND", b"")


def png_rows(pixels: np.ndarray, alpha: np.ndarray | None, bits: int, mode: str = "round") -> tuple[np.ndarray, int]:
    """Finished pixels (h, w, 1 or 3) (+ float alpha) -> (rows for :class:`PngWriter`, bit depth), with
    the policy of :func:`compose`: 16-bit only for gray without alpha; alpha is 8-bit."""
    if alpha is None:
        return pixels, (16 if pixels.dtype == np.uint16 else 8)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.concatenate([pixels, quantize(alpha, 8, mode)[..., None]], -1), 8


def check_writable(path: str | os.PathLike[str]) -> None:
    """Before any work: refuse an output path that cannot be written, by creating and removing a
    temp file in its folder (or in the nearest existing folder above, where the output's missing
    folders would be created)."""
    p = Path(path)
    if p.is_dir():
        raise LiifError(f"cannot write {p}: it is a folder")
    parent = p.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link where a folder is expected
            raise LiifError(f"cannot write {p}: {parent} is a broken link")
        parent = parent.parent
    if not parent.is_dir():
        raise LiifError(f"cannot write {p}: {parent} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise LiifError(f"cannot write {p}: {e.strerror or e}") from None


def save_png(im: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write a PNG via a temp file in the same folder, then rename: never a half-written file.
    A failure (disk full, permissions) is a one-line LiifError; the temp file is removed."""
    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            im.save(tmp, format="PNG")
    except OSError as e:
        raise LiifError(f"cannot write {p}: {e.strerror or e}") from None
    return p
