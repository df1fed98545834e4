"""The frame pipeline of a video job: decode thread -> [queue] -> render (the caller's thread) ->
[queue] -> encode + mux thread, bounded so memory does not grow with the video's length."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from liif.errors import LiifError
from liif.video.colour import SWS_MATRIX, Colour
from liif.video.formats import reason

if TYPE_CHECKING:
    from liif.video.frames import FrameUpscaler
    from liif.video.transcode import VideoReport


QUEUE_ITEMS = 4  # decoded frames / packets waiting on each side of the render


@dataclass
class Frame:
    pixels: np.ndarray
    pts: int | None


class End:
    pass


class Stopped(Exception):
    """The other side of a queue gave up."""


def run_threads(av: ModuleType, fu: FrameUpscaler, items: Iterator[tuple[str, Any]], first: Any, head: list[Any],
              streams: dict[int, Any], out: Any, ovs: Any, rep: VideoReport, colour_in: Colour,
              colour_out: Colour, rgb_fmt: str, pix_fmt: str, progress: bool) -> None:
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

    def to_rgb(frame: Any) -> Frame:
        decoded[0] += 1
        if (frame.height, frame.width) != coded:
            raise LiifError(f"the frame size changes at frame {decoded[0]} (from {coded[1]}x{coded[0]} "
                            f"to {frame.width}x{frame.height}); not supported")
        if rgb_in:
            arr = frame.to_ndarray(format=rgb_fmt)
        else:
            arr = frame.to_ndarray(format=rgb_fmt, src_colorspace=SWS_MATRIX[colour_in.matrix],
                                   src_color_range=colour_in.range, interpolation=flags)
        return Frame(arr, frame.pts)

    def read() -> None:
        try:
            for p in head:
                put(q_in, p, stop)
            put(q_in, to_rgb(first), stop)
            for kind, obj in items:
                put(q_in, to_rgb(obj) if kind == "frame" else obj, stop)
            put(q_in, End(), stop)
        except Stopped:
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
                item = get(q_out, stop)
                if isinstance(item, End):
                    for p in ovs.encode(None):
                        out.mux(p)
                    return
                if isinstance(item, Frame):
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
        except Stopped:
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
            item = get(q_in, stop)
            if isinstance(item, Frame):
                item = Frame(fu(item.pixels), item.pts)
                rep.frames_done += 1
                if bar is not None:
                    bar.update(1)
            put(q_out, item, stop)
            if isinstance(item, End):
                break
        while writer.is_alive() and not stop.is_set():
            writer.join(0.1)
    except Stopped:
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
            raise LiifError(f"cannot write {rep.dst} {rep.progress()}: {reason(e)}") from None
        raise e


def put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise Stopped


def get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    raise Stopped
