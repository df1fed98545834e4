"""The weights cache: ``<cache>/weights/<name>.pth``, and the sha256 recorded for each file.

A file enters the cache only once its source's check has passed. Sources that give a full sha256
are checked against it on every use. For the others (``git-blob``, ``sha256-prefix``) the cache
keeps ``<name>.pth.verified``, a small JSON record of the source's digest and the file's sha256
written when the check passed; later runs compare the file's sha256 with it. A file without a
matching record (the source changed, the record was lost) is checked as on download and recorded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from liif.fileio import sha256_of, write_text_atomic
from liif.models.variant import Pretrained
from liif.weights.verify import digests, mismatch


def cache_dir() -> Path:
    """``$LIIF_CACHE_DIR``, else ``$XDG_CACHE_HOME/liif``, else ``~/.cache/liif``."""
    if os.environ.get("LIIF_CACHE_DIR"):
        return Path(os.environ["LIIF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liif"


def local_file(name: str) -> Path:
    return cache_dir() / "weights" / f"{name}.pth"


def record_file(name: str) -> Path:
    f = local_file(name)
    return f.with_name(f.name + ".verified")


def _source_key(p: Pretrained) -> str:
    return f"{p.verify}:{p.digest}"


def record(name: str, p: Pretrained, sha256: str) -> None:
    """Note that the file of ``name``, with this sha256, passed ``p``'s check."""
    if p.verify != "sha256":
        write_text_atomic(record_file(name), json.dumps({"source": _source_key(p), "sha256": sha256}) + "\n")


def recorded_sha256(name: str, p: Pretrained) -> str | None:
    """The sha256 recorded for ``name`` when ``p``'s check passed; None without a record for ``p``."""
    try:
        rec = json.loads(record_file(name).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(rec, dict) and rec.get("source") == _source_key(p) and isinstance(rec.get("sha256"), str)
    return rec["sha256"] if ok else None


def holds(name: str, p: Pretrained) -> bool:
    """Whether the cache holds the right file for ``name`` (from source ``p``)."""
    f = local_file(name)
    if not f.is_file():
        return False
    if p.verify == "sha256":
        return sha256_of(f) == p.digest
    known = recorded_sha256(name, p)
    if known is not None:
        return sha256_of(f) == known
    d = digests(f)  # no record: check as on download, and record it
    if mismatch(d, p, name) is not None:
        return False
    record(name, p, d.sha256)
    return True


def evict(name: str) -> None:
    """Remove the cached file of ``name``, its record and any partial download."""
    f = local_file(name)
    for p in (f, record_file(name), f.with_name(f.name + ".part")):
        p.unlink(missing_ok=True)
