"""File writing and checking helpers shared by every module that writes or verifies files.

- :class:`atomic_path`: write a file through a temp file in its folder, renamed onto it on success,
  so a reader (or a killed process) never sees a half-written file;
- :func:`write_text_atomic`: a text file written through :class:`atomic_path`;
- :func:`sha256_of`: the sha256 of a file, read in 1 MiB blocks.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

CHUNK = 1 << 20  # bytes read or copied at a time


class atomic_path:
    """Context manager yielding a temp path in the target's folder; renamed onto it on success.

    On an exception the temp file is removed and the target is left as it was. The target's folder
    is created if missing; the file gets the usual mode (0666 less the umask), not mkstemp's 0600."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            try:
                os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual mode
                os.replace(self.tmp, self.target)  # fails when the target became a folder meanwhile
            except BaseException:
                self.tmp.unlink(missing_ok=True)
                raise
        else:
            self.tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via :class:`atomic_path`; return the path."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(text)
    return p


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()
