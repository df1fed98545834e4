"""Checking a weights file against its source's digest (``Pretrained.verify``), in one read of the file.

- ``sha256``: the file's sha256;
- ``git-blob``: git's blob id, SHA-1 of ``b"blob <size>\\0" + data``;
- ``sha256-prefix``: the sha256's first 8 hex digits (OpenMMLab's file-name suffix).

The full sha256 is computed in every case: the cache records it after a ``git-blob`` or
``sha256-prefix`` check passes (:mod:`liif.weights.cache`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from liif.fileio import CHUNK
from liif.models.variant import Pretrained

LFS_POINTER = b"version https://git-lfs.github.com/spec/"  # what a Git LFS pointer file starts with


@dataclass(frozen=True)
class Digests:
    sha256: str
    git_blob: str
    head: bytes  # the file's first bytes


def digests(path: Path) -> Digests:
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    head = b""
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            head = head or block[:64]
            sha256.update(block)
            blob.update(block)
    return Digests(sha256.hexdigest(), blob.hexdigest(), head)


def actual(d: Digests, p: Pretrained) -> str:
    """The file's digest of the kind ``p`` declares."""
    if p.verify == "git-blob":
        return d.git_blob
    return d.sha256[:8] if p.verify == "sha256-prefix" else d.sha256


def mismatch(d: Digests, p: Pretrained, label: str) -> str | None:
    """What is wrong with a file of digests ``d`` as the file of ``p``; None when it is that file."""
    if d.head.startswith(LFS_POINTER):
        return f"{label}: the server sent a Git LFS pointer, not the file"
    got = actual(d, p)
    return None if got == p.digest else f"checksum mismatch for {label}: expected {p.verify} {p.digest}, got {got}"
