"""Video containers and encoders: which suffixes are video, probing a file, PyAV's import, encoder
choice, the encoder's pixel format and the even sizes chroma subsampling needs."""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from liif.errors import LiifError
from liif.imaging import IMAGE_SUFFIXES

# Suffixes taken as video without probing; other non-image suffixes are probed with PyAV.

# Suffixes taken as video without probing; other non-image suffixes are probed with PyAV.
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
          ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg", ".flv": "flv",
          ".ogv": "ogg", ".3gp": "3gp", ".nut": "nut"}

VIDEO_SUFFIXES = set(MUXERS)

IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif"}

DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PRESET = "libx264", 18, "medium"
FALLBACK_CODECS = ("libvpx-vp9",)  # tried in order when the container does not take DEFAULT_CODEC (.webm)

X264_FAMILY = {"libx264", "libx264rgb", "libx265"}  # encoders whose defaults above apply


def require_av() -> ModuleType:
    try:
        import av
    except ImportError:
        raise LiifError("video needs PyAV, which is not installed: pip install 'liif[video]'") from None
    return av


def is_video(path: str | os.PathLike[str]) -> bool:
    """By suffix, or for an unknown suffix by probing: a container with a video stream that is
    not a still-image format."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or not p.is_file():
        return False
    try:
        import av
    except ImportError:
        return False
    try:
        with av.open(str(p)) as c:
            names = set(c.format.name.split(","))
            return bool(c.streams.video) and not names & IMAGE_FORMATS
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        return False


def reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).splitlines()[0][:200]


def encoder(av: ModuleType, name: str) -> Any:
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        raise LiifError(f"unknown video encoder {name!r} (e.g. libx264, libx265, libvpx-vp9, libsvtav1, "
                        f"ffv1)") from None
    if codec.type != "video":
        raise LiifError(f"{name!r} is not a video encoder (it encodes {codec.type})")
    return codec


def takes(av: ModuleType, muxer: str, codec: str, header: bool = False) -> bool:
    """Whether FFmpeg's ``muxer`` accepts a stream of the encoder ``codec``: the check PyAV makes when
    the stream is added, on a container in memory. ``header``: also open the encoder (64x64) and
    write the header into memory, for muxers that list no codecs and refuse only there (ogg). Used
    with header=True only for the default encoders, whose headers were tried in every muxer of
    :data:`MUXERS` (an unknown pair could abort the process in FFmpeg; see liif.video.copies)."""
    out = av.open(io.BytesIO(), "w", format=muxer)
    try:
        stream = out.add_stream(codec, rate=25)
        if header:
            formats = [f.name for f in (stream.codec_context.codec.video_formats or [])]
            stream.width = stream.height = 64
            stream.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
            out.start_encoding()
        return True
    except (av.FFmpegError, ValueError):  # "'webm' format does not support 'libx264' codec"
        return False
    finally:
        out.close()


def choose_encoder(av: ModuleType, suffix: str, name: str | None, say: Callable[[str], None]) -> Any:
    """The encoder named (refused in one line where the container does not take it), or, none named,
    :data:`DEFAULT_CODEC` or the first of :data:`FALLBACK_CODECS` the container takes (with a note)."""
    muxer = MUXERS[suffix]
    if name is not None:
        enc = encoder(av, name)
        if not takes(av, muxer, enc.name):
            raise LiifError(f"a {suffix} file cannot hold {enc.name} video ({muxer} does not take it): "
                            f"choose another --codec or output suffix")
        return enc
    for candidate in (DEFAULT_CODEC, *FALLBACK_CODECS):
        if candidate in av.codecs_available and takes(av, muxer, candidate, header=True):
            if candidate != DEFAULT_CODEC:
                say(f"a {suffix} file cannot hold {DEFAULT_CODEC} video: encoding with {candidate}")
            return encoder(av, candidate)
    raise LiifError(f"no default video encoder for {suffix} ({muxer} takes none of "
                    f"{', '.join((DEFAULT_CODEC, *FALLBACK_CODECS))}): give --codec")


def pixel_format(av: ModuleType, enc: Any, fmt: Any) -> str:
    """The input's pixel format where the encoder takes it, else an RGB one for RGB input, else yuv420p."""
    formats = [f.name for f in (enc.video_formats or [])]
    name = fmt.name
    if name.startswith("yuvj"):  # deprecated full-range aliases: the range is tagged instead
        name = "yuv" + name[4:]
    if not formats or name in formats:
        return name
    if fmt.is_rgb:
        rgb = [f for f in ("rgb24", "gbrp", "bgr24", "bgr0", "rgb48le", "gbrp10le") if f in formats]
        if rgb:
            return rgb[0]
    return "yuv420p" if "yuv420p" in formats else formats[0]


def even_size(av: ModuleType, out_hw: tuple[int, int], pix_fmt: str, say: Callable[[str], None],
          swap: bool) -> tuple[int, int]:
    """Round dimensions the pixel format subsamples (chroma) up to the next even number."""
    probe = av.VideoFormat(pix_fmt, 64, 64)
    comps = probe.components
    sub_w = any(c.width and c.width < 64 for c in comps)
    sub_h = any(c.height and c.height < 64 for c in comps)
    h, w = out_hw
    new = (h + (h % 2 if sub_h else 0), w + (w % 2 if sub_w else 0))
    if new != out_hw:
        shown = (new[0], new[1]) if swap else (new[1], new[0])
        was = (h, w) if swap else (w, h)
        say(f"{pix_fmt} needs even dimensions: output {was[0]}x{was[1]} rounded up to "
            f"{shown[0]}x{shown[1]} (WxH)")
    return new
