"""How long a video should be, and what to say when fewer frames could be decoded.

A container declares a frame count (MP4, MOV, AVI: ``stream.frames``) or only a duration: the
video stream's own (``stream.duration``; Matroska's per-track ``DURATION`` tag) or, failing that,
the container's (which includes the audio). A truncated or damaged file decodes fewer frames than
that and then simply ends, so the decoded frames are compared with it:

- a declared count: fewer frames decoded than declared is short, the frames an edit list cuts
  excepted (MP4 and MOV count every sample they hold, also those before the start of their edit
  list, which the demuxer marks as discarded and the decoder never shows: a stream-copy cut,
  ``ffmpeg -ss 5 -c copy``, keeps the frames back to the previous keyframe that way), and unless
  the frames decoded cover the stream's own duration (AVI counts the empty entries by which it
  stores a variable frame rate: frames that repeat the one before, never decoded);
- a duration: the decoded frames end clearly before it does (the end of the last frame, from where
  the duration counts: the stream's or the container's start time, 0 for Matroska's tag), by more
  than two frame periods and 2 % of the duration (timestamps round, audio may run a little longer
  than the video), is short. The count in messages is estimated as the time from the first frame to
  the end of the duration, times the average rate.

Times rather than counts decide for durations, so a variable frame rate is not mistaken for a gap.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLACK_PERIODS, SLACK_SHARE = 2, 0.02


@dataclass
class Expected:
    frames: int | None = None  # declared, or estimated from ``seconds``; None if unknown
    declared: bool = False
    seconds: float | None = None  # the duration the estimate comes from
    start: float = 0.0  # the time it counts from
    period: float | None = None  # seconds per frame at the stream's average rate

    def first_frame_at(self, t: float | None) -> None:
        """Estimate the count from the first frame's time on (a video may start after its audio)."""
        if not self.declared and self.seconds is not None and self.period and t is not None:
            self.frames = max(1, int(round((self.start + self.seconds - t) / self.period)))

    def total(self) -> str:
        """``60``, ``~60`` or ``?`` for messages."""
        return "?" if self.frames is None else f"{'' if self.declared else '~'}{self.frames}"


@dataclass
class Decoded:
    """What decoding gave: frames, where the last one ends, and why it stopped early (a decode error)."""

    frames: int = 0
    end: float | None = None
    error: str | None = None
    discarded: int = 0  # packets the demuxer marked as never shown (cut by an edit list)

    def add(self, frame: Any, period: float | None) -> None:
        self.frames += 1
        t = frame_time(frame)
        if t is None:
            return
        length = float(frame.duration * frame.time_base) if frame.duration else (period or 0.0)
        self.end = t + length if self.end is None else max(self.end, t + length)


def frame_time(frame: Any) -> float | None:
    return None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base)


def _tag_seconds(text: str | None) -> float | None:
    """Matroska's ``DURATION`` tag, ``HH:MM:SS.fffffffff``."""
    m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*", text or "")
    return None if m is None else int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def expected(inp: Any, vs: Any) -> Expected:
    rate = vs.average_rate or vs.guessed_rate
    period = 1 / float(rate) if rate else None
    seconds, start = None, 0.0
    if vs.duration and vs.time_base is not None:
        seconds = float(vs.duration * vs.time_base)
        start = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
    if vs.frames:
        return Expected(int(vs.frames), True, seconds, start, period)
    if seconds is None:  # Matroska: the track's end time, written by the muxer
        tags = {k.upper(): v for k, v in vs.metadata.items()}
        seconds = _tag_seconds(tags.get("DURATION"))
    if seconds is None and inp.duration:
        seconds = inp.duration / 1_000_000
        start = inp.start_time / 1_000_000 if inp.start_time is not None else 0.0
    if seconds is None or not seconds > 0 or not rate:
        return Expected(None, False, seconds, start, period)
    return Expected(max(1, int(round(seconds * float(rate)))), False, seconds, start, period)


def shortfall(src: Path, exp: Expected, got: Decoded) -> str | None:
    """Why the decoded frames fall clearly short of what the file declares or its duration implies
    (``in.mkv ends after 22 of ~60 frames (0.73 of 2.00 s)...``); None when they do not."""
    n = got.frames
    if got.error is not None:
        return f"cannot decode {src} after {n} of {exp.total()} frames (truncated or corrupt?): {got.error}"
    if exp.frames is None:
        return None
    slack = max(SLACK_PERIODS * (exp.period or 0.0), SLACK_SHARE * (exp.seconds or 0.0))
    if exp.declared:
        shown = exp.frames - got.discarded
        if n >= shown:
            return None
        if exp.seconds is not None and got.end is not None and got.end - exp.start >= exp.seconds - slack:
            return None  # fewer frames than counted, but to the end of the stream: empty (repeat) entries
        cut = f", {got.discarded} more cut by its edit list" if got.discarded else ""
        return f"{src} ends after {n} of the {shown} frames it declares{cut} (truncated or corrupt?)"
    assert exp.seconds is not None
    if got.end is not None:
        covered = got.end - exp.start
        if covered >= exp.seconds - slack:
            return None
        return (f"{src} ends after {n} of ~{exp.frames} frames ({covered:.2f} of {exp.seconds:.2f} s; "
                "truncated or corrupt?)")
    if n >= exp.frames - max(SLACK_PERIODS, SLACK_SHARE * exp.frames):
        return None
    return f"{src} ends after {n} of ~{exp.frames} frames (truncated or corrupt?)"
