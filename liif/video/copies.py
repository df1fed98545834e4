"""The streams remuxed into the output (audio, subtitles, further video) and whether the output
container takes them, checked before the output is opened.

Some of FFmpeg's muxers do not refuse a stream they cannot write but stop on an assertion, which
aborts the whole process (SIGABRT) with no message: PCM audio without a channel layout in .flv, for
one. So the check is a dry run in a child process (:mod:`liif.video.muxprobe`): the header of the
output is written into memory with one more copied stream at a time; an abort or an error names the
stream, and the job is refused in one line before anything is rendered or written.
"""
from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from liif.errors import LiifError

PROBE = Path(__file__).with_name("muxprobe.py")
# Run the probe by path, without the current folder on sys.path (nothing there can shadow av).
BOOT = "import runpy, sys; sys.path.pop(0); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
TIMEOUT_S = 60


def describe(s: Any) -> str:
    """``stream 1 (audio, pcm_s16le)``."""
    codec = s.codec_context.name if s.codec_context is not None else getattr(s.codec, "name", "?")
    return f"stream {s.index} ({s.type}, {codec})"


def check_copies(src: Path, suffix: str, muxer: str, codec: str, out_hw: tuple[int, int], pix_fmt: str,
                 rate: Fraction, copied: list[Any]) -> None:
    """Refuse (one-line LiifError) a copied stream the ``muxer`` cannot write, found by a dry run of
    the output's header in a child process. Where no child can be run, the check is skipped (the
    output's own set-up still refuses what FFmpeg reports as an error)."""
    if not copied:
        return
    job = {"src": str(src), "muxer": muxer, "codec": codec, "width": out_hw[1], "height": out_hw[0],
           "pix_fmt": pix_fmt, "rate": str(rate), "copied": [s.index for s in copied]}
    try:
        proc = subprocess.run([sys.executable, "-c", BOOT, str(PROBE), json.dumps(job)], capture_output=True,
                              text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return
    tried, verdict = -2, None
    for line in proc.stdout.splitlines():
        if line.startswith("try "):
            tried = int(line[4:])
        elif line.startswith("{"):
            verdict = json.loads(line)
    if verdict is None and proc.returncode != 0 and tried >= -1:  # the child died at this step
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        if tried == -1:
            raise LiifError(f"cannot write {codec} video into {suffix}: FFmpeg's {muxer} muxer aborts on it ({how}); "
                            "choose another --codec or output suffix")
        raise LiifError(f"cannot copy {describe(copied[tried])} into {suffix}: FFmpeg's {muxer} muxer aborts on it "
                        f"({how}); try .mkv")
    if verdict is not None and verdict.get("fail", -1) >= 0:
        raise LiifError(f"cannot copy {describe(copied[verdict['fail']])} into {suffix}: {verdict['reason']}; "
                        "try .mkv")
