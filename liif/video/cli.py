"""``liif upscale in.mp4 -o out.mp4``: the video branch of the upscale command."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from liif.errors import LiifError, Terminated
from liif.imaging import check_writable
from liif.pipeline import Scale
from liif.video.formats import VIDEO_SUFFIXES, is_video, require_av
from liif.video.transcode import VideoReport, upscale_video

if TYPE_CHECKING:
    from liif.api import Upscaler


def wants_video(inputs: Sequence[str], output: str) -> bool:
    """Whether ``liif upscale`` runs the video path: a video input (suffix or probe) or a video output."""
    return Path(output).suffix.lower() in VIDEO_SUFFIXES or any(is_video(i) for i in inputs)


def refuse_video_options(args: argparse.Namespace) -> None:
    for flag, value in (("--codec", args.codec), ("--crf", args.crf), ("--preset", args.preset),
                        ("--allow-partial", args.allow_partial or None)):
        if value is not None:
            raise LiifError(f"{flag} applies to video inputs only")


def cli_upscale(args: argparse.Namespace, size: tuple[int, int] | None, scale: Scale | None,
                region: Sequence[int] | None, load_upscaler: Callable[[], Upscaler]) -> int:
    """``liif upscale in.mp4 -o out.mp4 ...``: one video in, one video out. ``load_upscaler`` is the
    upscale command's own (the same options and limits as for images, and the ``-v`` line)."""
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
    check_writable(dst)  # before the model is loaded (upscale_video checks again)
    up = load_upscaler()
    rep = VideoReport(src, dst)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        upscale_video(up, src, dst, size, scale, codec=args.codec, crf=args.crf, preset=args.preset,
                      progress=progress, report=rep, note=lambda m: print(f"liif: note: {m}", file=sys.stderr),
                      allow_partial=args.allow_partial)
    except KeyboardInterrupt:
        print(f"liif: interrupted {rep.progress()}; no output written", file=sys.stderr)
        return 130
    except Terminated:  # SIGTERM (see liif.errors.run_reporting_errors): unwound like Ctrl-C
        print(f"liif: terminated {rep.progress()}; no output written", file=sys.stderr)
        return 143
    except LiifError as e:
        if rep.frames_done and "frames" not in str(e):
            raise LiifError(f"{e} ({rep.progress()}; no output written)") from None
        raise
    print(f"{src} -> {dst} ({rep.out_size[0]}x{rep.out_size[1]}, {rep.frames_written} frames)")
    return 0
