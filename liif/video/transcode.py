"""Video file -> video file: open, choose geometry, pixel format and colour, set up the output
streams, run the frame pipeline, and write atomically (a failure leaves no file)."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from liif import limits
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.imaging import check_writable
from liif.pipeline import Scale, output_size
from liif.video.colour import Colour, input_colour, output_colour
from liif.video.copies import check_copies
from liif.video.formats import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    MUXERS,
    VIDEO_SUFFIXES,
    X264_FAMILY,
    choose_encoder,
    even_size,
    pixel_format,
    reason,
    require_av,
)
from liif.video.frames import FrameUpscaler
from liif.video.length import Decoded, Expected, expected, frame_time, shortfall
from liif.video.threads import run_threads

if TYPE_CHECKING:
    from liif.api import Upscaler


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


def upscale_video(up: Upscaler, src: str | os.PathLike[str], dst: str | os.PathLike[str],
                  size: Sequence[int] | None = None, scale: Scale | None = None, *,
                  precision: str | None = None, codec: str | None = None, crf: int | None = None,
                  preset: str | None = None, progress: bool = False, report: VideoReport | None = None,
                  note: Callable[[str], None] | None = None, allow_partial: bool = False) -> VideoReport:
    """Upscale the video ``src`` into ``dst`` (container chosen by its suffix); ``size`` is
    (height, width), ``scale`` a factor or (sy, sx), both in displayed orientation. ``codec`` is the
    video encoder: by default libx264, or libvpx-vp9 where the container does not take H.264
    (.webm); one the container does not take is refused. ``crf`` and ``preset`` default to 18 and
    ``medium`` for the x264/x265 encoders and to the encoder's own defaults elsewhere. ``note``
    receives remarks (rounded sizes, skipped data streams, the encoder chosen). The output is written
    to a temp file and renamed: a failure or an interrupt leaves no file. A file that ends clearly
    before the frame count it declares (or its duration implies), or cannot be decoded to its end, is
    refused, unless ``allow_partial``: then the frames decoded are written, with a note. Returns a
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
    check_writable(dst)  # before any work: a folder, a file where its folder should be, no permission
    _peek_size(av, src, up.max_input_pixels)
    try:
        inp = av.open(str(src), metadata_errors="replace")
    except (av.FFmpegError, ValueError) as e:
        raise LiifError(f"cannot read {src} as a video (not a video, truncated, or an unsupported format): "
                        f"{reason(e)}") from None
    try:
        return _run(av, up, inp, rep, precision, size, scale, codec, crf, preset, progress, say, allow_partial)
    finally:
        inp.close()


def _run(av: ModuleType, up: Upscaler, inp: Any, rep: VideoReport, precision: str | None,
         size: Sequence[int] | None, scale: Scale | None, codec: str | None, crf: int | None, preset: str | None,
         progress: bool, say: Callable[[str], None], allow_partial: bool) -> VideoReport:
    src, dst = rep.src, rep.dst
    if not inp.streams.video and not inp.streams.audio:
        raise LiifError(f"cannot read {src} as a video: no audio or video streams found (truncated?)")
    vs = _video(av, inp)
    if vs is None:
        raise LiifError(f"no video stream in {src}")
    if vs.codec_context is None:
        raise LiifError(f"unsupported video codec in {src}: no decoder for it in this FFmpeg build")
    _check_size(vs, up.max_input_pixels, src)  # (where the peek could not tell) before a frame is decoded
    vs.codec_context.thread_type = "AUTO"  # frame + slice threads for decoding
    suffix = dst.suffix.lower()
    enc = choose_encoder(av, suffix, codec, say)
    copied = [s for s in inp.streams if s is not vs and s.type in ("audio", "subtitle", "video", "attachment")]
    for s in inp.streams:
        if s is not vs and s not in copied:
            say(f"stream {s.index} ({s.type}) is not copied")

    exp, got = expected(inp, vs), Decoded()
    items = _demux(av, inp, vs, copied, src, exp, got, allow_partial)
    head: list[Any] = []  # packets of other streams that come before the first frame
    first = None
    for kind, obj in items:
        if kind == "frame":
            first = obj
            break
        head.append(obj)
    if first is None:
        raise LiifError(f"no video frame could be decoded from {src}" + (f": {got.error}" if got.error else ""))

    # Geometry: the request is in displayed orientation; frames are rendered in coded orientation.
    rotation = int(first.rotation or 0)
    swap = rotation % 180 != 0 and abs(rotation) % 90 == 0
    coded_hw = (first.height, first.width)
    shown_hw = coded_hw[::-1] if swap else coded_hw
    out_shown = output_size(shown_hw, size, scale)
    out_hw = out_shown[::-1] if swap else out_shown
    pix_fmt = pixel_format(av, enc, first.format)
    out_hw = even_size(av, out_hw, pix_fmt, say, swap)
    fu = FrameUpscaler(up, out_hw, None, precision)  # the backend, built once per video
    fu.plan(coded_hw)  # the plan, and the pixel limit checked before anything is written
    rep.in_size = (shown_hw[1], shown_hw[0])
    rep.out_size = (out_hw[0], out_hw[1]) if swap else (out_hw[1], out_hw[0])
    exp.first_frame_at(frame_time(first))
    rep.frames_total, rep.estimated = exp.frames, not exp.declared
    deep = max(c.bits for c in first.format.components) > 8 and \
        max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    rgb_fmt = "rgb48le" if deep else "rgb24"
    colour_in = input_colour(first, coded_hw)
    colour_out = output_colour(first, colour_in, out_hw, av.VideoFormat(pix_fmt).is_rgb)
    # Before the output is opened: the container takes every copied stream (a dry run in a child).
    check_copies(src, suffix, MUXERS[suffix], enc.name, out_hw, pix_fmt, _rate(vs), copied)

    with _output(dst) as tmp:
        try:
            out = av.open(str(tmp), "w", format=MUXERS[suffix], metadata_errors="replace")
        except av.FFmpegError as e:
            raise LiifError(f"cannot write {dst}: {reason(e)}") from None
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
                                    f"{reason(e)}; try .mkv") from None
            try:  # open the encoder and write the header now: bad settings fail before any render
                out.start_encoding()
            except (av.FFmpegError, ValueError) as e:
                raise LiifError(f"cannot start encoding {dst} with {enc.name}: {reason(e)}") from None
            run_threads(av, fu, items, first, head, streams, out, ovs, rep, colour_in, colour_out, rgb_fmt, pix_fmt,
                      progress)
            if rep.frames_written != rep.frames_done:
                raise LiifError(f"the encoder wrote {rep.frames_written} of {rep.frames_done} frames")
            short = shortfall(src, exp, got)
            if short is not None and not allow_partial:
                raise LiifError(_refusal(short, got))
            if short is not None:
                say(f"{short}; the output has the {rep.frames_written} frames decoded (--allow-partial)")
            done = True
        finally:
            try:
                out.close()  # writes the trailer (the index of an .mp4)
            except av.FFmpegError as e:
                if done:
                    raise LiifError(f"cannot write {dst}: {reason(e)}") from None
    if exp.declared and exp.frames is not None and exp.frames < rep.frames_written:
        say(f"{src} declares {exp.frames} frames; {rep.frames_written} were decoded and written")
    return rep


@contextmanager
def _output(dst: Path) -> Iterator[Path]:
    """:class:`liif.fileio.atomic_path`, where failing to make the temp file or to rename it onto
    ``dst`` (a folder appeared there meanwhile, say) is a one-line error and leaves no temp file."""
    tmp: Path | None = None
    stage = "open"
    try:
        with atomic_path(dst) as tmp:
            stage = "write"
            yield tmp
            stage = "rename"
    except OSError as e:
        if stage == "write":  # the caller's own error
            raise
        raise LiifError(f"cannot write {dst}: {reason(e)}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone after the rename; left by a failed one


def _video(av: ModuleType, inp: Any) -> Any:
    """The video stream upscaled: the first one that is not cover art."""
    videos = [s for s in inp.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    return videos[0] if videos else None


def _check_size(vs: Any, limit: int, src: Path) -> None:
    """The input pixel limit on the size the stream declares (0 where unknown: left to the first frame)."""
    cc = vs.codec_context
    if cc is not None and cc.width > 0 and cc.height > 0:
        limits.check_input((cc.height, cc.width), limit, str(src))


def _peek_size(av: ModuleType, src: Path, limit: int) -> None:
    """The pixel limit before the real open: opening a file decodes its first frames to learn their
    format (1.5 GB and seconds for a 16000x16000 H.264 frame), so the declared size is read first
    from an open with decoding switched off (``skip_frame=all``: the header and packets only)."""
    try:
        peek = av.open(str(src), options={"skip_frame": "all"}, metadata_errors="replace")
    except (av.FFmpegError, ValueError, UnicodeDecodeError):
        return  # the real open says what is wrong
    with peek:
        vs = _video(av, peek)
        if vs is not None:
            _check_size(vs, limit, src)


def _refusal(short: str, got: Decoded) -> str:
    return f"{short}; no output written (--allow-partial / allow_partial=True writes the {got.frames} frames decoded)"


def _demux(av: ModuleType, inp: Any, vs: Any, copied: list[Any], src: Path, exp: Expected, got: Decoded,
           allow_partial: bool) -> Iterator[tuple[str, Any]]:
    """Packets of the copied streams and decoded frames of ``vs``, in file order (counted in ``got``).
    A decode error ends the video: refused, or with ``allow_partial`` the frames so far are kept."""
    try:
        for packet in inp.demux([vs, *copied]):
            if packet.stream is vs:
                got.discarded += bool(packet.is_discard)  # before the start of an edit list: never shown
                for frame in packet.decode():
                    got.add(frame, exp.period)
                    yield "frame", frame
            elif packet.dts is not None or packet.size:
                yield "packet", packet
    except av.FFmpegError as e:
        got.error = reason(e)
        if not allow_partial:
            raise LiifError(_refusal(shortfall(src, exp, got) or got.error, got)) from None


def _rate(vs: Any) -> Fraction:
    return Fraction(vs.average_rate or vs.guessed_rate or 25)


def _copy_metadata(src: dict[str, str], dst: dict[str, str]) -> None:
    for k, v in src.items():
        if k.lower() not in ("encoder", "major_brand", "minor_version", "compatible_brands", "duration"):
            dst[k] = v


def _video_stream(out: Any, vs: Any, enc: Any, pix_fmt: str, out_hw: tuple[int, int], coded_hw: tuple[int, int],
                  colour: Colour, rotation: int, crf: int | None, preset: str | None) -> Any:
    ovs = out.add_stream(enc.name, rate=_rate(vs))
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
