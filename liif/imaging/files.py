"""Image files: which suffixes are images, listing a folder, opening a user's image under the input
pixel limit, reading dataset images, and writing PNGs atomically."""
from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from liif import limits
from liif.errors import LiifError
from liif.fileio import atomic_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The one list of image suffixes: what `liif upscale` reads, dataset folders hold and the viewer lists.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
WEB_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}  # the ones browsers show: what the viewer lists


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


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a dataset image to a writable uint8 RGB array (H, W, 3); Pillow converts grayscale,
    palette and alpha. Unlike :func:`open_image` (user inputs) it applies no pixel limit beyond
    Pillow's own and no EXIF rotation: dataset files are used as stored, as the official code does."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except OSError as e:
        raise LiifError(f"cannot decode image {path}: {e}") from None


def png_bit_depth(path: str | os.PathLike[str]) -> int | None:
    """Bit depth from a PNG header (None for other formats)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != PNG_SIGNATURE or len(head) < 25:
        return None
    return struct.unpack(">B", head[24:25])[0]


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
