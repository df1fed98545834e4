"""Image-folder datasets (spec section 5): a sorted folder of PNG/JPEG files, an optional decoded
in-memory cache, a repeat factor; the DIV2K folder layout; paired LR/HR folders.

Items are uint8 RGB arrays (H, W, 3): the training wrappers crop and down-sample in uint8 (PIL
bicubic), so nothing is lost by keeping the decoded images in that form (4x smaller than float).

Caches: ``none`` decodes on every access, ``memory`` decodes once per process, ``mmap`` decodes once
per machine into one uint8 file (``images-KEY.u8`` + ``images-KEY.json``, KEY from the file names,
sizes and mtimes, so a changed source rebuilds it) that every process maps: all ranks and DataLoader
workers on a node share one copy in the page cache. The first process to take the folder's lock
builds it; the others wait on the lock, then map it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from liif.errors import LiifError
from liif.fileio import atomic_path, write_text_atomic
from liif.imaging import IMAGE_SUFFIXES, read_rgb

CACHES = ("none", "memory", "mmap")


def list_images(root: str | Path, what: str = "dataset folder") -> list[Path]:
    """Sorted image files (:data:`liif.imaging.IMAGE_SUFFIXES`) directly inside ``root``; a clear error
    if it is missing or empty."""
    p = Path(root)
    if not p.is_dir():
        raise LiifError(f"{what} not found: {p}")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LiifError(f"{what} {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class ImageFolder:
    """Images of one folder (sorted by name), ``repeat`` times over; optional in-memory cache."""

    def __init__(self, root: str | Path | Sequence[str | Path], repeat: int = 1, cache: str = "none",
                 first_k: int | None = None, cache_dir: str | Path | None = None) -> None:
        """``root`` may be a list of folders: their sorted files are concatenated in that order.
        ``cache_dir``: where the ``mmap`` cache lives (required for it)."""
        if cache not in CACHES:
            raise LiifError(f"cache must be one of {CACHES}, got {cache!r}")
        if repeat < 1:
            raise LiifError(f"repeat must be >= 1, got {repeat}")
        roots = [root] if isinstance(root, (str, Path)) else list(root)
        self.root = ", ".join(str(r) for r in roots)
        self.files = [f for r in roots for f in list_images(r)]
        if first_k is not None:
            self.files = self.files[:first_k]
        self.repeat = repeat
        self.mapped: tuple[Path, list[tuple[int, int, int]]] | None = None
        self.cached: list[np.ndarray] | None = None
        if cache == "memory":
            self.cached = [read_rgb(f) for f in self.files]
        elif cache == "mmap":
            if cache_dir is None:
                raise LiifError("cache 'mmap' needs a cache folder")
            self.mapped = build_mmap_cache(self.files, Path(cache_dir))
            self.cached = map_images(*self.mapped)

    def __getstate__(self) -> dict[str, object]:
        # A mapped cache travels to spawned workers as its path, not as a copy of the pixels.
        state = dict(self.__dict__)
        if self.mapped is not None:
            state["cached"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if self.mapped is not None:
            self.cached = map_images(*self.mapped)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, i: int) -> np.ndarray:
        j = i % len(self.files)
        return self.cached[j] if self.cached is not None else read_rgb(self.files[j])

    def sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every distinct image, without decoding the pixels when uncached."""
        if self.cached is not None:
            return [a.shape[:2] for a in self.cached]
        out = []
        for f in self.files:
            try:
                with Image.open(f) as im:
                    out.append((im.height, im.width))
            except OSError as e:  # UnidentifiedImageError is one
                raise LiifError(f"cannot read image {f}: {e}") from None
        return out


def build_mmap_cache(files: list[Path], folder: Path) -> tuple[Path, list[tuple[int, int, int]]]:
    """Decode ``files`` once into ``folder/images-KEY.u8``; return (that file, [(offset, height, width)]).

    Built under an exclusive lock on ``folder/images.lock``: one process decodes, the others (other
    ranks, other runs) wait and reuse it."""
    listing = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    data, index = folder / f"images-{key}.u8", folder / f"images-{key}.json"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "images.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not index.is_file():
            entries, offset = [], 0
            with atomic_path(data) as tmp, open(tmp, "wb") as f:
                for path in files:
                    a = read_rgb(path)
                    f.write(a.tobytes())
                    entries.append((offset, a.shape[0], a.shape[1]))
                    offset += a.nbytes
            # the index last: its presence means the data is complete
            write_text_atomic(index, json.dumps({"files": listing, "entries": entries}))
    entries = [tuple(e) for e in json.loads(index.read_text())["entries"]]
    return data, entries


def map_images(data: Path, entries: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """Read-only (H, W, 3) views into the mapped cache file."""
    mm = np.memmap(data, dtype=np.uint8, mode="r")
    return [mm[o:o + h * w * 3].reshape(h, w, 3) for o, h, w in entries]


class PairedFolders:
    """LR and HR images matched by sorted position; both folders must hold the same file names."""

    def __init__(self, lr_root: str | Path, hr_root: str | Path, repeat: int = 1, cache: str = "none",
                 first_k: int | None = None) -> None:
        self.lr = ImageFolder(lr_root, repeat, cache, first_k)
        self.hr = ImageFolder(hr_root, repeat, cache, first_k)
        # DIV2K names LR files 0801x4.png for HR 0801.png: a trailing x<scale> is not a mismatch.
        lr_names = [re.sub(r"x\d+$", "", f.stem) for f in self.lr.files]
        hr_names = [f.stem for f in self.hr.files]
        if lr_names != hr_names:
            diff = sorted(set(lr_names) ^ set(hr_names))[:5] or lr_names[:3]
            raise LiifError(f"paired folders {lr_root} and {hr_root} do not hold the same file names "
                            f"(e.g. {diff})")

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.lr[i], self.hr[i]


def div2k(root: str | Path, split: str = "train", scale: int | None = None,
          **kw: object) -> ImageFolder | PairedFolders:
    """The DIV2K layout: ``root/DIV2K_{split}_HR`` and ``root/DIV2K_{split}_LR_bicubic/X{scale}``.

    With ``scale`` the result pairs LR and HR (the x2-x4 validation protocol); without it, HR only.
    DIV2K's LR files are named ``0801x2.png``; they sort in the same order as the HR names.
    """
    if split not in ("train", "valid"):
        raise LiifError(f"DIV2K split must be 'train' or 'valid', got {split!r}")
    r = Path(root)
    hr = r / f"DIV2K_{split}_HR"
    if scale is None:
        return ImageFolder(hr, **kw)  # type: ignore[arg-type]
    lr = r / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    pair = PairedFolders.__new__(PairedFolders)
    pair.lr = ImageFolder(lr, **kw)  # type: ignore[arg-type]
    pair.hr = ImageFolder(hr, **kw)  # type: ignore[arg-type]
    if len(pair.lr) != len(pair.hr):
        raise LiifError(f"DIV2K {split}: {len(pair.lr)} LR files in {lr} but {len(pair.hr)} HR files in {hr}")
    return pair
