"""Pixels in and out of the viewer: bytes of an upload or served file decoded into an upright RGB
image under the limits (415 for non-images, 413 for too many pixels), PNG bytes of an answer, the
window of the bicubic resize that the page shows beside LIIF, and the header naming a download."""
from __future__ import annotations

import io
import unicodedata
import warnings
from urllib.parse import quote

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError

from liif import imaging
from liif.serve.limits import Limits

FORMATS = {"PNG", "JPEG", "WEBP", "BMP"}


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Bytes -> RGB image, upright per its EXIF orientation, refusing non-images (415) and too many
    pixels (413, from the header, before decoding; Pillow's own decompression-bomb refusal also
    answers 413)."""
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        if im.format not in FORMATS:
            raise HTTPException(415, f"unsupported image format {im.format}; use PNG, JPEG, WebP or BMP")
        if im.width * im.height > limits.input_pixels:
            raise HTTPException(413, f"image has {im.width}x{im.height} pixels; the limit is "
                                     f"{limits.input_pixels:,} pixels")
        im.load()
        with warnings.catch_warnings():  # an animated upload shows its first frame, as the CLI does
            warnings.simplefilter("ignore", imaging.MultiFrameInput)
            im = imaging.prepare(im)  # EXIF orientation: the image as the user sees it
    except HTTPException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(413, f"image has more than the {limits.input_pixels:,} pixels allowed") from None
    except UnidentifiedImageError:
        raise HTTPException(415, "not an image (PNG, JPEG, WebP or BMP expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise HTTPException(415, f"cannot decode the image: {e}") from None
    return im.convert("RGB")


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def bicubic_window(im: Image.Image, out_hw: tuple[int, int], region: tuple[int, int, int, int]) -> Image.Image:
    """The window (x, y, w, h) of Pillow's bicubic resize of ``im`` to ``out_hw``, computed alone."""
    H, W = out_hw
    x, y, w, h = region
    sx, sy = im.width / W, im.height / H
    return im.resize((w, h), Image.Resampling.BICUBIC, box=(x * sx, y * sy, (x + w) * sx, (y + h) * sy))


def _ascii(c: str) -> str:
    """One character of a file name for a header's plain ``filename``: printable ASCII as it is
    (but for ``"``, ``\\`` and ``%``, which clients read differently), an accented letter without its
    accent, anything else ``_``."""
    plain = "".join(f for f in unicodedata.normalize("NFKD", c) if " " <= f <= "~" and f not in '"\\%')
    return plain or "_"


def attachment(name: str) -> str:
    """``Content-Disposition`` of a download called ``name`` (RFC 6266): the name itself, UTF-8 and
    percent-encoded, as ``filename*`` (RFC 5987), and an ASCII ``filename`` for clients without it.
    Any name gives a header that HTTP can carry (Latin-1 only, no line breaks)."""
    fallback = "".join(map(_ascii, name))
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name.encode('utf-8', 'replace'), safe='')}"


__all__ = ["attachment", "bicubic_window", "decode_image", "png_bytes"]
