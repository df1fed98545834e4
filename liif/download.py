"""The one resumable downloader for every file liif fetches (dataset archives, pretrained weights).

``download(url, dest, check)`` streams ``url`` into ``dest.part``, runs ``check`` on the complete
part and only then renames it to ``dest``. So ``dest`` is either absent or a checked file:

- a part left by an interrupted run is resumed with an HTTP ``Range`` request (a server that
  ignores it sends the whole file, which replaces the part);
- a connection dropped mid-file is resumed in the same call, up to ``attempts`` requests; after
  that the part is kept and the error says so, and the next run goes on from where it stopped;
- a part that fails ``check`` is deleted (resuming it could never fix it).

Errors are one-line :class:`LiifError` s naming the URL: the HTTP status, an unreachable host, a
cut-off download, a failed check. ``file://`` URLs (local mirrors, tests) go through the same code.
Progress: a tqdm bar on a terminal, plain lines (:class:`liif.progress.ProgressLines`) otherwise.
"""
from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from liif.errors import LiifError
from liif.fileio import sha256_of
from liif.progress import ProgressLines

Check = Callable[[Path], "str | None"]  # the problem with a complete download, or None when it is right
BLOCK = 1 << 16  # bytes read from the connection at a time
TIMEOUT_S = 60  # a connection silent for this long counts as dropped
ATTEMPTS = 3  # requests per call when the connection drops mid-file


def sha256_check(expected: str, label: str) -> Check:
    def check(path: Path) -> str | None:
        got = sha256_of(path)
        return None if got == expected else f"checksum mismatch for {label}: expected sha256 {expected}, got {got}"
    return check


def size_check(expected: int, label: str) -> Check:
    def check(path: Path) -> str | None:
        got = path.stat().st_size
        return None if got == expected else f"size mismatch for {label}: expected {expected} bytes, got {got}"
    return check


def download(url: str, dest: Path, check: Check | None = None, progress: bool | None = None,
             attempts: int = ATTEMPTS) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed when present), check, rename.

    ``progress``: True a tqdm bar, False nothing, None a bar on a terminal and plain lines otherwise."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _fill(url, part, progress, attempts, dest.name)
    problem = check(part) if check is not None else None
    if problem:
        part.unlink(missing_ok=True)
        raise LiifError(f"{problem}; the download was deleted, run the command again")
    os.replace(part, dest)
    return dest


@dataclass
class _Response:
    body: IO[bytes]
    start: int  # the byte the body starts at: the requested offset, or 0 when the server sent everything
    total: int | None  # the file's size, when the server says


def _fill(url: str, part: Path, progress: bool | None, attempts: int, label: str) -> None:
    """Append to ``part`` until it holds the whole file, resuming after each dropped connection."""
    got, total, why = 0, None, ""
    for _ in range(max(1, attempts)):
        offset = part.stat().st_size if part.exists() else 0
        resp = _open(url, offset)
        if resp is None:  # nothing left to send: the part is complete (or too long; the check tells)
            return
        got, total = resp.start, resp.total
        bar = _bar(progress, label, total, got)
        try:
            with resp.body, open(part, "ab" if resp.start else "wb") as out:
                while block := resp.body.read(BLOCK):
                    out.write(block)
                    got += len(block)
                    bar(got)
            why = ""
        except (OSError, http.client.HTTPException) as e:
            why = f" ({_reason(e)})"
        finally:
            bar(None)
        if not why and (total is None or got >= total):
            return
    of = f" of {total}" if total is not None else ""
    raise LiifError(f"download of {url} was cut off at byte {got}{of}{why} after {attempts} tries; "
                    f"run the command again to resume")


def _open(url: str, offset: int) -> _Response | None:
    """Open ``url`` from byte ``offset``; None when the server has nothing past it (HTTP 416)."""
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url[len("file://"):]))
        if not path.is_file():
            raise LiifError(f"download source not found: {path}")
        f = open(path, "rb")
        f.seek(offset)
        return _Response(f, offset, path.stat().st_size)
    req = urllib.request.Request(url, headers={"User-Agent": "liif-fetch"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return None
        raise LiifError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise LiifError(f"cannot reach {url}: {_reason(e.reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        raise LiifError(f"cannot reach {url}: {_reason(e)}") from None
    length = resp.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    if offset and resp.status == 206:
        start = _range_start(resp.headers.get("Content-Range", ""))
        if start != offset:  # not the range we asked for: start again from byte 0
            resp.close()
            return _open_whole(url)
        return _Response(resp, offset, offset + size if size is not None else None)
    return _Response(resp, 0, size)


def _open_whole(url: str) -> _Response:
    resp = _open(url, 0)
    assert resp is not None  # a request without Range is never answered 416
    return resp


def _range_start(content_range: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/SIZE``."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _reason(e: Any) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, http.client.IncompleteRead):
        return "incomplete read"
    return str(e) or type(e).__name__


def _bar(progress: bool | None, label: str, total: int | None, initial: int) -> Callable[[int | None], None]:
    """A progress callback taking the bytes so far, and None at the end."""
    if progress is False or (progress is None and total is None and not sys.stderr.isatty()):
        return lambda done: None
    if progress or sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                   leave=False)

        def show(done: int | None) -> None:
            if done is None:
                bar.close()
            else:
                bar.update(done - bar.n)
        return show
    lines = ProgressLines(f"download {label}", "bytes")
    assert total is not None
    return lambda done: None if done is None else lines(done, total)
