"""The child side of :func:`liif.video.copies.check_copies`, run as a script in its own process
(``python -c BOOT muxprobe.py JOB``), never imported by the package: it imports only the standard
library and PyAV, so it starts in a fraction of a second, without torch.

For k = -1, 0, 1, ... it opens an output container in memory with the job's video stream and the
first k + 1 copied streams of the input, writes the header and the trailer, and prints ``try k``
before each step. An FFmpeg assertion in a muxer aborts this process only; the parent reads the
last ``try`` line to name the stream. An ordinary error is printed as a JSON verdict
``{"fail": k, "reason": "..."}``; success as ``{"ok": true}``; a problem of this script itself as
``{"error": "..."}`` (the parent then skips the check). Exit status 0 in all these cases.
"""
from __future__ import annotations

import io
import json
import sys
from fractions import Fraction
from typing import Any


def _step(av: Any, inp: Any, job: dict[str, Any], copied: list[int]) -> None:
    out = av.open(io.BytesIO(), "w", format=job["muxer"])
    try:
        v = out.add_stream(job["codec"], rate=Fraction(job["rate"]))
        v.width, v.height, v.pix_fmt = job["width"], job["height"], job["pix_fmt"]
        streams = {s.index: s for s in inp.streams}
        for index in copied:
            out.add_stream_from_template(streams[index])
        out.start_encoding()
    finally:
        out.close()


def main(argv: list[str]) -> int:
    try:
        job = json.loads(argv[0])
        import av

        with av.open(job["src"], metadata_errors="replace") as inp:
            for k in range(-1, len(job["copied"])):
                print(f"try {k}", flush=True)
                try:
                    _step(av, inp, job, job["copied"][:k + 1])
                except (av.FFmpegError, ValueError) as e:
                    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
                    print(json.dumps({"fail": k, "reason": str(text).splitlines()[0][:200]}), flush=True)
                    return 0
        print(json.dumps({"ok": True}), flush=True)
    except Exception as e:  # noqa: BLE001 - any problem here only skips the check
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
