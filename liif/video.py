"""Video: upscale every frame of a video to any size, streamed, keeping its audio and timing.

Decoding, muxing and encoding use PyAV (FFmpeg's libraries, bundled in its wheels; optional extra
``liif[video]``). Frames flow through bounded queues, one thread decoding, the caller's thread
rendering and one thread encoding, so memory does not grow with the video's length and, on CUDA,
decode and encode overlap the render. The model's compute backend and the render plan are built
once per video (per input frame size for :func:`upscale_frames`).

What the output keeps from the input:

- every frame with its own timestamp (``pts`` and time base copied frame by frame, so variable
  frame rate survives) and the stream's frame rate;
- audio, subtitle and further video streams (cover art, say), remuxed packet for packet, never
  re-encoded;
- the rotation (display matrix): frames stay in their coded orientation and get the same rotation
  tag; ``size``/``scale`` are in displayed orientation (what players show);
- the colour description: frames are converted to RGB with the input's matrix and range (an
  untagged input is read as BT.709 from 720 lines up, else BT.601, as players do), rendered in RGB
  and converted back with the input's matrix and range, which are tagged on the output, primaries
  and transfer too. An untagged input gets the matrix players assume for the *output* size, and
  that tag. Inputs above 8 bits per sample are rendered from 16-bit RGB and keep their pixel
  format where the encoder supports it;
- anamorphic inputs keep their display aspect ratio when ``size`` keeps it (the sample aspect ratio
  is rescaled).

Encoders whose pixel format subsamples chroma (H.264 in yuv420p: both axes) need even dimensions:
an odd output width or height is rounded up to the next even number, with a note.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from liif import imageio
from liif.errors import LiifError
from liif.fileio import atomic_path

if TYPE_CHECKING:
    import argparse

    from liif.api import Scale, Upscaler

# Suffixes taken as video without probing; other non-image suffixes are probed with PyAV.
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
          ".ts": "mpegts", ".m2ts": "mpegts", ".mts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg", ".flv": "flv",
          ".ogv": "ogg", ".3gp": "3gp", ".nut": "nut"}
VIDEO_SUFFIXES = set(MUXERS)
IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif"}
DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PRESET = "libx264", 18, "medium"
X264_FAMILY = {"libx264", "libx264rgb", "libx265"}  # encoders whose defaults above apply
QUEUE_ITEMS = 4  # decoded frames / packets waiting on each side of the render
# FFmpeg colour-matrix ids (AVCOL_SPC_*) -> libswscale's coefficient tables.
SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
RGB_MATRIX, BT709, SMPTE170M, MPEG_RANGE, JPEG_RANGE = 0, 1, 6, 1, 2


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
    if suffix in imageio_suffixes() or not p.is_file():
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


def imageio_suffixes() -> set[str]:
    return imageio.IMAGE_SUFFIXES


# -- frames ---------------------------------------------------------------------------------------

class FrameUpscaler:
    """Upscale frames of one video: the backend is built once, the output size and render plan once
    per input frame size. Frames are arrays as ``Upscaler.upscale`` takes them (uint8 or uint16
    (H, W, 3), ...); each result equals ``up.upscale(frame, size=..., scale=...)``."""

    def __init__(self, up: Upscaler, size: Sequence[int] | None = None, scale: Scale | None = None,
                 precision: str | None = None) -> None:
        self.up, self.size, self.scale = up, size, scale
        self.precision = up.precision if precision is None else up._resolve_precision(precision)
        self.backend = up.compute_backend(self.precision)  # once per video
        self.plans: dict[tuple[int, int], Any] = {}

    def plan(self, in_hw: tuple[int, int]) -> Any:
        if in_hw not in self.plans:
            self.plans[in_hw] = self.up.plan(in_hw, self.size, self.scale)
        return self.plans[in_hw]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        from liif.api import _decode_array, _encode_array, _window_alpha

        if not isinstance(frame, np.ndarray):
            raise LiifError(f"frames must be NumPy arrays, got {type(frame).__name__}")
        dec = _decode_array(frame)
        out_hw, window = self.plan(dec.hw)
        arr = dec.rgb if dec.rgb.flags.writeable else dec.rgb.copy()
        rgb = torch.from_numpy(arr).permute(2, 0, 1).to(self.up.device)
        channels, dtype, finish = imageio.finisher(dec.gray, dec.bits, self.up.quantize)
        pixels = self.up.render_into(rgb, out_hw, window, self.precision, False, channels, dtype, finish,
                                     backend=self.backend)
        return _encode_array(pixels, _window_alpha(dec.alpha, out_hw, window), frame, self.up.quantize)


def upscale_frames(up: Upscaler, frames: Iterable[np.ndarray], size: Sequence[int] | None = None,
                   scale: Scale | None = None, precision: str | None = None) -> Iterator[np.ndarray]:
    """Lazily upscale an iterable of frames: one frame is taken, rendered and yielded at a time."""
    fu = FrameUpscaler(up, size, scale, precision)
    for frame in frames:
        yield fu(frame)


# -- file to file ---------------------------------------------------------------------------------

@dataclass
class VideoReport:
    """What a video job did (also filled in as it goes, for messages after a failure)."""

    src: Path
    dst: Path
    in_size: tuple[int, int] = (0, 0)  # (width, height), displayed orientation
    out_size: tuple[int, int] = (0, 0)
    frames_total: int | None = None  # as declared or estimated from the duration; None if unknown
    estimated: bool = False  # frames_total is an estimate
    frames_done: int = 0  # rendered
    frames_written: int = 0  # encoded

    def progress(self) -> str:
        total = "?" if self.frames_total is None else f"{'~' if self.estimated else ''}{self.frames_total}"
        return f"after {self.frames_done} of {total} frames"


@dataclass
class _Colour:
    matrix: int  # AVCOL_SPC_*
    range: int  # AVCOL_RANGE_*
    primaries: int
    trc: int


@dataclass
class _Frame:
    pixels: np.ndarray
    pts: int | None


class _End:
    pass


class _Stopped(Exception):
    """The other side of a queue gave up."""


def upscale_video(up: Upscaler, src: str | os.PathLike[str], dst: str | os.PathLike[str],
                  size: Sequence[int] | None = None, scale: Scale | None = None, *,
                  precision: str | None = None, codec: str = DEFAULT_CODEC, crf: int | None = None,
                  preset: str | None = None, progress: bool = False, report: VideoReport | None = None,
                  note: Callable[[str], None] | None = None) -> VideoReport:
    """Upscale the video ``src`` into ``dst`` (container chosen by its suffix); ``size`` is
    (height, width), ``scale`` a factor or (sy, sx), both in displayed orientation. ``crf`` and
    ``preset`` default to 18 and ``medium`` for the x264/x265 encoders and to the encoder's own
    defaults elsewhere. ``note`` receives remarks (rounded sizes, skipped data streams). The output
    is written to a temp file and renamed: a failure or an interrupt leaves no file. Returns a
    :class:`VideoReport`; pass your own ``report`` to read ``frames_done`` after an exception."""
    av = require_av()
    src, dst = Path(src), Path(dst)
    rep = report if report is not None else VideoReport(src, dst)
    rep.src, rep.dst = src, dst
    say = note or (lambda _msg: None)
    if dst.suffix.lower() not in MUXERS:
        raise LiifError(f"output must be a video file ({', '.join(sorted(VIDEO_SUFFIXES))}), got {dst}")
    if not src.exists():
        raise LiifError(f"input not found: {src}")
    if not src.is_file():
        raise LiifError(f"input is not a file: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise LiifError(f"output {dst} would overwrite the input")
    try:
        inp = av.open(str(src), metadata_errors="replace")
    except (av.FFmpegError, ValueError) as e:
        raise LiifError(f"cannot read {src} as a video (not a video, truncated, or an unsupported format): "
                        f"{_reason(e)}") from None
    try:
        return _run(av, up, inp, rep, precision, size, scale, codec, crf, preset, progress, say)
    finally:
        inp.close()


def _run(av: ModuleType, up: Upscaler, inp: Any, rep: VideoReport, precision: str | None,
         size: Sequence[int] | None, scale: Scale | None, codec: str, crf: int | None, preset: str | None,
         progress: bool, say: Callable[[str], None]) -> VideoReport:
    src, dst = rep.src, rep.dst
    videos = [s for s in inp.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not inp.streams.video and not inp.streams.audio:
        raise LiifError(f"cannot read {src} as a video: no audio or video streams found (truncated?)")
    if not videos:
        raise LiifError(f"no video stream in {src}")
    vs = videos[0]
    if vs.codec_context is None:
        raise LiifError(f"unsupported video codec in {src}: no decoder for it in this FFmpeg build")
    vs.codec_context.thread_type = "AUTO"  # frame + slice threads for decoding
    enc = _encoder(av, codec)
    copied = [s for s in inp.streams if s is not vs and s.type in ("audio", "subtitle", "video", "attachment")]
    for s in inp.streams:
        if s is not vs and s not in copied:
            say(f"stream {s.index} ({s.type}) is not copied")

    items = _demux(av, inp, vs, copied, src)
    head: list[Any] = []  # packets of other streams that come before the first frame
    first = None
    for kind, obj in items:
        if kind == "frame":
            first = obj
            break
        head.append(obj)
    if first is None:
        raise LiifError(f"no video frame could be decoded from {src}")

    # Geometry: the request is in displayed orientation; frames are rendered in coded orientation.
    rotation = int(first.rotation or 0)
    swap = rotation % 180 != 0 and abs(rotation) % 90 == 0
    coded_hw = (first.height, first.width)
    shown_hw = coded_hw[::-1] if swap else coded_hw
    from liif.api import output_size

    out_shown = output_size(shown_hw, size, scale)
    out_hw = out_shown[::-1] if swap else out_shown
    pix_fmt = _pixel_format(av, enc, first.format)
    out_hw = _even(av, out_hw, pix_fmt, say, swap)
    fu = FrameUpscaler(up, out_hw, None, precision)  # the backend, built once per video
    fu.plan(coded_hw)  # the plan, and the pixel limit checked before anything is written
    rep.in_size = (shown_hw[1], shown_hw[0])
    rep.out_size = (out_hw[0], out_hw[1]) if swap else (out_hw[1], out_hw[0])
    rep.frames_total, rep.estimated = _frame_total(inp, vs), not vs.frames
    deep = max(c.bits for c in first.format.components) > 8 and \
        max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    rgb_fmt = "rgb48le" if deep else "rgb24"
    colour_in = _input_colour(first, coded_hw)
    colour_out = _output_colour(first, colour_in, out_hw, av.VideoFormat(pix_fmt).is_rgb)

    with atomic_path(dst) as tmp:
        out = av.open(str(tmp), "w", format=MUXERS[dst.suffix.lower()], metadata_errors="replace")
        done = False
        try:
            _copy_metadata(inp.metadata, out.metadata)
            ovs = _video_stream(out, vs, enc, pix_fmt, out_hw, coded_hw, colour_out, rotation, crf, preset)
            streams = {vs.index: ovs}
            for s in copied:
                try:
                    streams[s.index] = out.add_stream_from_template(s)
                except (av.FFmpegError, ValueError) as e:
                    what = s.codec_context.name if s.codec_context else "?"
                    raise LiifError(f"cannot copy stream {s.index} ({s.type}, {what}) into {dst.suffix}: "
                                    f"{_reason(e)}; try .mkv") from None
            try:  # open the encoder and write the header now: bad settings fail before any render
                out.start_encoding()
            except (av.FFmpegError, ValueError) as e:
                raise LiifError(f"cannot start encoding {dst} with {enc.name}: {_reason(e)}") from None
            _pipeline(av, fu, items, first, head, streams, out, ovs, rep, colour_in, colour_out, rgb_fmt, pix_fmt,
                      progress)
            if rep.frames_written != rep.frames_done:
                raise LiifError(f"the encoder wrote {rep.frames_written} of {rep.frames_done} frames")
            if vs.frames and rep.frames_written < vs.frames:
                raise LiifError(f"{src} ends after {rep.frames_written} of the {vs.frames} frames it declares "
                                f"(truncated?); no output written")
            done = True
        finally:
            try:
                out.close()  # writes the trailer (the index of an .mp4)
            except av.FFmpegError as e:
                if done:
                    raise LiifError(f"cannot write {dst}: {_reason(e)}") from None
    if vs.frames and vs.frames != rep.frames_written:
        say(f"{src} declares {vs.frames} frames; {rep.frames_written} were decoded and written")

    return rep


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).splitlines()[0][:200]


def _encoder(av: ModuleType, name: str) -> Any:
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        raise LiifError(f"unknown video encoder {name!r} (e.g. libx264, libx265, libvpx-vp9, libsvtav1, "
                        f"ffv1)") from None
    if codec.type != "video":
        raise LiifError(f"{name!r} is not a video encoder (it encodes {codec.type})")
    return codec


def _demux(av: ModuleType, inp: Any, vs: Any, copied: list[Any], src: Path) -> Iterator[tuple[str, Any]]:
    """Packets of the copied streams and decoded frames of ``vs``, in file order."""
    n = 0
    try:
        for packet in inp.demux([vs, *copied]):
            if packet.stream is vs:
                for frame in packet.decode():
                    n += 1
                    yield "frame", frame
            elif packet.dts is not None or packet.size:
                yield "packet", packet
    except av.FFmpegError as e:
        raise LiifError(f"cannot decode {src} after {n} frames (truncated or corrupt?): {_reason(e)}") from None


def _pixel_format(av: ModuleType, enc: Any, fmt: Any) -> str:
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


def _even(av: ModuleType, out_hw: tuple[int, int], pix_fmt: str, say: Callable[[str], None],
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


def _frame_total(inp: Any, vs: Any) -> int | None:
    if vs.frames:
        return int(vs.frames)
    rate = vs.average_rate or vs.guessed_rate
    if vs.duration is not None and vs.time_base is not None and rate:
        return int(round(float(vs.duration * vs.time_base * rate)))
    if inp.duration is not None and rate:
        return int(round(inp.duration / 1_000_000 * float(rate)))
    return None


def _input_colour(frame: Any, coded_hw: tuple[int, int]) -> _Colour:
    rng = int(frame.color_range) or (JPEG_RANGE if frame.format.name.startswith("yuvj") else MPEG_RANGE)
    matrix = int(frame.colorspace)
    if matrix not in SWS_MATRIX:
        matrix = BT709 if coded_hw[0] >= 720 or coded_hw[1] >= 1280 else SMPTE170M
    return _Colour(matrix, rng, int(frame.color_primaries), int(frame.color_trc))


def _output_colour(frame: Any, colour_in: _Colour, out_hw: tuple[int, int], rgb_out: bool) -> _Colour:
    if rgb_out:  # RGB pixels: no matrix (an encoder would otherwise tag its RGB planes as YUV)
        return _Colour(RGB_MATRIX, JPEG_RANGE, colour_in.primaries, colour_in.trc)
    if not frame.format.is_rgb and int(frame.colorspace) in SWS_MATRIX:  # tagged: keep the input's description
        return colour_in
    # Untagged YUV keeps its range; RGB input becomes limited-range YUV, as usual for delivery.
    matrix = BT709 if out_hw[0] >= 720 or out_hw[1] >= 1280 else SMPTE170M
    rng = MPEG_RANGE if frame.format.is_rgb else colour_in.range
    return _Colour(matrix, rng, colour_in.primaries, colour_in.trc)


def _copy_metadata(src: dict[str, str], dst: dict[str, str]) -> None:
    for k, v in src.items():
        if k.lower() not in ("encoder", "major_brand", "minor_version", "compatible_brands", "duration"):
            dst[k] = v


def _video_stream(out: Any, vs: Any, enc: Any, pix_fmt: str, out_hw: tuple[int, int], coded_hw: tuple[int, int],
                  colour: _Colour, rotation: int, crf: int | None, preset: str | None) -> Any:
    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
    ovs = out.add_stream(enc.name, rate=rate)
    ovs.width, ovs.height = out_hw[1], out_hw[0]
    ovs.pix_fmt = pix_fmt
    ovs.time_base = vs.time_base  # frames keep their pts exactly
    cc = ovs.codec_context
    cc.time_base = vs.time_base
    cc.color_range, cc.colorspace = colour.range, colour.matrix
    cc.color_primaries, cc.color_trc = colour.primaries, colour.trc
    sar = vs.sample_aspect_ratio
    if sar and sar != 1:  # keep the display aspect ratio
        sar = Fraction(sar) * Fraction(coded_hw[1], out_hw[1]) / Fraction(coded_hw[0], out_hw[0])
        cc.sample_aspect_ratio = sar.limit_denominator(65535)
    known = getattr(cc, "supported_options", None)  # PyAV >= 18 lists an encoder's options; else trust the user
    private = None if known is None else {o.name for o in known.private}
    options: dict[str, str] = {}
    if crf is not None or enc.name in X264_FAMILY:
        if private is not None and "crf" not in private:
            raise LiifError(f"encoder {enc.name} has no CRF setting; leave out --crf")
        options["crf"] = str(DEFAULT_CRF if crf is None else crf)
        if enc.name == "libvpx-vp9":
            options["b"] = "0"  # constant quality
    if preset is not None or enc.name in X264_FAMILY:
        if private is not None and "preset" not in private:
            raise LiifError(f"encoder {enc.name} has no preset setting; leave out --preset")
        options["preset"] = DEFAULT_PRESET if preset is None else preset
    ovs.options = options
    for k in ("language", "title"):
        if k in vs.metadata:
            ovs.metadata[k] = vs.metadata[k]
    if rotation:
        ovs.set_display_rotation(rotation)
    return ovs


def _pipeline(av: ModuleType, fu: FrameUpscaler, items: Iterator[tuple[str, Any]], first: Any, head: list[Any],
              streams: dict[int, Any], out: Any, ovs: Any, rep: VideoReport, colour_in: _Colour,
              colour_out: _Colour, rgb_fmt: str, pix_fmt: str, progress: bool) -> None:
    """decode thread -> [queue] -> render (this thread) -> [queue] -> encode + mux thread."""
    from av.video.reformatter import Interpolation

    try:  # accurate rounding and full chroma interpolation (flags PyAV >= 18 exposes)
        flags = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    except AttributeError:
        flags = Interpolation.BICUBIC
    rgb_in = first.format.is_rgb
    rgb_out = av.VideoFormat(pix_fmt).is_rgb
    coded = (first.height, first.width)
    stop = threading.Event()
    q_in: queue.Queue[Any] = queue.Queue(QUEUE_ITEMS)
    q_out: queue.Queue[Any] = queue.Queue(QUEUE_ITEMS)
    errors: list[BaseException] = []
    decoded = [0]

    def to_rgb(frame: Any) -> _Frame:
        decoded[0] += 1
        if (frame.height, frame.width) != coded:
            raise LiifError(f"the frame size changes at frame {decoded[0]} (from {coded[1]}x{coded[0]} "
                            f"to {frame.width}x{frame.height}); not supported")
        if rgb_in:
            arr = frame.to_ndarray(format=rgb_fmt)
        else:
            arr = frame.to_ndarray(format=rgb_fmt, src_colorspace=SWS_MATRIX[colour_in.matrix],
                                   src_color_range=colour_in.range, interpolation=flags)
        return _Frame(arr, frame.pts)

    def read() -> None:
        try:
            for p in head:
                _put(q_in, p, stop)
            _put(q_in, to_rgb(first), stop)
            for kind, obj in items:
                _put(q_in, to_rgb(obj) if kind == "frame" else obj, stop)
            _put(q_in, _End(), stop)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the rendering thread
            errors.append(e)
            stop.set()

    tb = ovs.codec_context.time_base  # the input stream's time base: frames keep their pts
    step = Fraction(1, 1) / ((ovs.codec_context.framerate or Fraction(25)) * tb)
    last_pts: list[int] = []

    def write() -> None:
        try:
            while True:
                item = _get(q_out, stop)
                if isinstance(item, _End):
                    for p in ovs.encode(None):
                        out.mux(p)
                    return
                if isinstance(item, _Frame):
                    vf = av.VideoFrame.from_ndarray(item.pixels, format=rgb_fmt)
                    if not rgb_out:
                        vf = vf.reformat(format=pix_fmt, dst_colorspace=SWS_MATRIX[colour_out.matrix],
                                         dst_color_range=colour_out.range, interpolation=flags)
                    elif vf.format.name != pix_fmt:
                        vf = vf.reformat(format=pix_fmt)
                    vf.colorspace, vf.color_range = colour_out.matrix, colour_out.range
                    vf.color_primaries, vf.color_trc = colour_out.primaries, colour_out.trc
                    pts = item.pts if item.pts is not None else \
                        (last_pts[-1] + max(1, round(step)) if last_pts else 0)
                    last_pts[:] = [pts]
                    vf.pts, vf.time_base = pts, tb  # (the muxer may pick another time base for the stream)
                    for p in ovs.encode(vf):
                        out.mux(p)
                    rep.frames_written += 1
                else:
                    item.stream = streams[item.stream.index]
                    out.mux(item)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the rendering thread
            errors.append(e)
            stop.set()

    reader = threading.Thread(target=read, name="liif-video-decode", daemon=True)
    writer = threading.Thread(target=write, name="liif-video-encode", daemon=True)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=rep.frames_total, unit="frame", desc="video", dynamic_ncols=True)
    reader.start()
    writer.start()
    try:
        while True:
            item = _get(q_in, stop)
            if isinstance(item, _Frame):
                item = _Frame(fu(item.pixels), item.pts)
                rep.frames_done += 1
                if bar is not None:
                    bar.update(1)
            _put(q_out, item, stop)
            if isinstance(item, _End):
                break
        while writer.is_alive() and not stop.is_set():
            writer.join(0.1)
    except _Stopped:
        pass
    finally:
        if errors or writer.is_alive():  # failed or interrupted: the threads give up
            stop.set()
        reader.join()
        writer.join()
        if bar is not None:
            bar.close()
    if errors:
        e = errors[0]
        if isinstance(e, LiifError):
            raise e
        if isinstance(e, av.FFmpegError):
            raise LiifError(f"cannot write {rep.dst} {rep.progress()}: {_reason(e)}") from None
        raise e


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise _Stopped


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    raise _Stopped


# -- command line ---------------------------------------------------------------------------------

def wants_video(inputs: Sequence[str], output: str) -> bool:
    """Whether ``liif upscale`` runs the video path: a video input (suffix or probe) or a video output."""
    return Path(output).suffix.lower() in VIDEO_SUFFIXES or any(is_video(i) for i in inputs)


def refuse_video_options(args: argparse.Namespace) -> None:
    for flag, value in (("--codec", args.codec), ("--crf", args.crf), ("--preset", args.preset)):
        if value is not None:
            raise LiifError(f"{flag} applies to video inputs only")


def cli_upscale(args: argparse.Namespace, size: tuple[int, int] | None, scale: Scale | None,
                region: Sequence[int] | None, max_memory: int | None, max_pixels: int | None = None) -> int:
    """``liif upscale in.mp4 -o out.mp4 ...``: one video in, one video out."""
    import sys

    from liif import api

    require_av()
    if len(args.inputs) != 1:
        raise LiifError("a video is upscaled on its own: give one input video and one output file")
    if region is not None:
        raise LiifError("--region is not supported for video")
    src, dst = Path(args.inputs[0]), Path(args.output)
    if dst.suffix.lower() not in VIDEO_SUFFIXES:
        raise LiifError(f"the output of a video must be a video file ({', '.join(sorted(VIDEO_SUFFIXES))}), got {dst}")
    if not is_video(src):
        raise LiifError(f"input is not a video: {src}")
    if args.crf is not None and not 0 <= args.crf <= 63:
        raise LiifError(f"--crf must be 0..63, got {args.crf}")
    up = api.load(args.weights, device=args.device, precision=args.precision, method=args.method,
                  max_memory=max_memory, max_pixels=max_pixels, backend=args.backend, onnx_dir=args.onnx_dir,
                  quantize=args.quantize)
    if args.verbose:
        from liif.cli import describe_run

        print(describe_run(up, args.precision), file=sys.stderr)
    rep = VideoReport(src, dst)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        upscale_video(up, src, dst, size, scale, codec=args.codec or DEFAULT_CODEC, crf=args.crf,
                      preset=args.preset, progress=progress, report=rep,
                      note=lambda m: print(f"liif: note: {m}", file=sys.stderr))
    except KeyboardInterrupt:
        print(f"liif: interrupted {rep.progress()}; no output written", file=sys.stderr)
        return 130
    except LiifError as e:
        if rep.frames_done and "frames" not in str(e):
            raise LiifError(f"{e} ({rep.progress()}; no output written)") from None
        raise
    print(f"{src} -> {dst} ({rep.out_size[0]}x{rep.out_size[1]}, {rep.frames_written} frames)")
    return 0


__all__ = ["FrameUpscaler", "VideoReport", "is_video", "upscale_frames", "upscale_video"]
