"""A streaming PNG writer: rows band by band, so the image never has to be whole in memory."""
from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

from liif.errors import LiifError
from liif.imaging.channels import quantize
from liif.imaging.files import PNG_SIGNATURE

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
