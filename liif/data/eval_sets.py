"""Evaluation datasets (Set5, Set14, B100, Urban100, DIV2K validation): where to get them, how they
are laid out, how to check them. Training data is read by :mod:`liif.data.folders`.

Standard layout (the EDSR "benchmark" layout, as in ``tests/data``)::

    <root>/<Set>/HR/<name>.png
    <root>/<Set>/LR_bicubic/X<k>/<name>.png      (or <stem>x<k>.png, as in EDSR's benchmark.tar)

``fetch`` downloads the public archives (resumable, HTTP Range, into ``<file>.part``), checks
their sha256 where it is known and their size otherwise, and extracts them into that layout.
Archives whose checksum no public source lists are marked ``sha256=None``; for them the
extracted tree is checked by ``verify`` (image counts, HR/LR pairing and sizes).
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from liif.data.roots import data_root
from liif.download import Check, download, sha256_check, size_check
from liif.errors import LiifError
from liif.fileio import CHUNK
from liif.imaging import IMAGE_SUFFIXES

MATLAB_SCALES = (2, 3, 4)  # scales for which the standard sets ship MATLAB-bicubic LR files


@dataclass(frozen=True)
class Archive:
    """One downloadable file. ``sha256``/``size`` are None where no public source lists them."""

    url: str
    filename: str
    sha256: str | None
    size: int | None
    members: dict[str, str]  # folder inside the archive -> folder inside the dataset dir


@dataclass(frozen=True)
class DatasetInfo:
    key: str  # command-line name: set5, div2k, ...
    folder: str  # folder name under the data root: Set5, DIV2K, ...
    n_images: int
    archives: tuple[Archive, ...]
    scales: tuple[int, ...] = MATLAB_SCALES
    note: str = ""


_DIV2K = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
# EDSR's benchmark bundle (Set5, Set14, B100, Urban100 with HR/ and LR_bicubic/X2-X4), as the
# LIIF README links it. No public source we could read lists its checksum: verified by structure.
_BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"


def _benchmark(key: str, folder: str, n: int) -> DatasetInfo:
    arch = Archive(_BENCHMARK_URL, "benchmark.tar", None, None, {f"benchmark/{folder}": ""})
    return DatasetInfo(key, folder, n, (arch,), note="checksum unknown: verified by structure (counts, pairs, sizes)")


REGISTRY: dict[str, DatasetInfo] = {
    d.key: d
    for d in [
        DatasetInfo(
            "div2k", "DIV2K", 100,
            (
                # sha256 and sizes of HR and X2 as listed by tensorflow/datasets url_checksums/div2k.txt
                Archive(_DIV2K + "DIV2K_valid_HR.zip", "DIV2K_valid_HR.zip",
                        "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", 448993893,
                        {"DIV2K_valid_HR": "HR"}),
                Archive(_DIV2K + "DIV2K_valid_LR_bicubic_X2.zip", "DIV2K_valid_LR_bicubic_X2.zip",
                        "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57", 117763600,
                        {"DIV2K_valid_LR_bicubic/X2": "LR_bicubic/X2"}),
                Archive(_DIV2K + "DIV2K_valid_LR_bicubic_X3.zip", "DIV2K_valid_LR_bicubic_X3.zip", None, None,
                        {"DIV2K_valid_LR_bicubic/X3": "LR_bicubic/X3"}),
                Archive(_DIV2K + "DIV2K_valid_LR_bicubic_X4.zip", "DIV2K_valid_LR_bicubic_X4.zip", None, None,
                        {"DIV2K_valid_LR_bicubic/X4": "LR_bicubic/X4"}),
            ),
            note="validation split 0801-0900; X3/X4 checksums unknown: verified by structure",
        ),
        _benchmark("set5", "Set5", 5),
        _benchmark("set14", "Set14", 14),
        _benchmark("b100", "B100", 100),
        _benchmark("urban100", "Urban100", 100),
    ]
}


def info(key: str) -> DatasetInfo:
    k = key.lower()
    if k not in REGISTRY:
        raise LiifError(f"unknown dataset {key!r}; known: {', '.join(REGISTRY)} (or give a folder with HR/)")
    return REGISTRY[k]


def known_key(folder_name: str) -> str | None:
    """Registry key of a folder named like a known set (case-insensitive), else None."""
    name = folder_name.lower()
    for d in REGISTRY.values():
        if name in (d.key, d.folder.lower()):
            return d.key
    return "b100" if name in ("bsd100", "bsds100") else None


# -- the folder layout --------------------------------------------------------------------------

@dataclass
class DatasetFolder:
    """A dataset in the standard layout."""

    name: str
    path: Path
    key: str | None  # registry key when the folder is one of the known sets
    hr_files: list[Path] = field(default_factory=list)
    lr_dirs: dict[int, Path] = field(default_factory=dict)  # LR folders given instead of LR_bicubic/X<k>

    def lr_dir(self, scale: int) -> Path:
        return self.lr_dirs.get(scale, self.path / "LR_bicubic" / f"X{scale}")

    def lr_file(self, hr: Path, scale: int) -> Path | None:
        """The LR file for ``hr``: same name, ``<stem>x<k><suffix>`` (EDSR naming), or ``<stem>.png``
        (``liif data degrade``'s naming)."""
        d = self.lr_dir(scale)
        for cand in (d / hr.name, d / f"{hr.stem}x{scale}{hr.suffix}", d / f"{hr.stem}.png"):
            if cand.is_file():
                return cand
        return None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_folder(path: Path, name: str | None = None) -> DatasetFolder:
    hr = path / "HR"
    if not hr.is_dir():
        raise LiifError(f"{path} is not a dataset folder: it has no HR/ subfolder "
                        f"(expected HR/ and LR_bicubic/X<k>/ with the same file names)")
    files = _images(hr)
    if not files:
        raise LiifError(f"{hr} holds no images")
    return DatasetFolder(name or path.name, path, known_key(path.name), files)


def resolve(name_or_path: str, root: Path | None = None) -> DatasetFolder:
    """A dataset folder from an existing path, or a known name looked up under the data root."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return open_folder(p)
    if any(sep in name_or_path for sep in ("/", os.sep)):
        raise LiifError(f"dataset folder not found: {p}")
    d = info(name_or_path)  # unknown names fail here
    folder = (root or data_root()) / d.folder
    if not folder.is_dir():
        raise LiifError(f"dataset {d.folder} is not under {folder.parent}; run `liif data fetch {d.key}` "
                        f"(or pass --data-root DIR, or a folder path)")
    return open_folder(folder, d.folder)


# -- verification -----------------------------------------------------------------------------

def verify_folder(ds: DatasetFolder, n_images: int | None = None, scales: tuple[int, ...] = ()) -> list[str]:
    """Problems with a dataset folder (empty list = fine): counts, missing LR files, LR sizes that
    are not floor(HR / k). Scales whose LR folder exists are always checked."""
    problems: list[str] = []
    if n_images is not None and len(ds.hr_files) != n_images:
        problems.append(f"{ds.path / 'HR'}: {len(ds.hr_files)} images, expected {n_images}")
    present = sorted({int(p.name[1:]) for p in (ds.path / "LR_bicubic").glob("X*")
                      if p.is_dir() and p.name[1:].isdigit()} | set(scales))
    for k in present:
        if not ds.lr_dir(k).is_dir():
            problems.append(f"{ds.lr_dir(k)} is missing")
            continue
        n_lr = len(_images(ds.lr_dir(k)))
        if n_lr != len(ds.hr_files):
            problems.append(f"{ds.lr_dir(k)}: {n_lr} images for {len(ds.hr_files)} HR images")
        for hr in ds.hr_files:
            lr = ds.lr_file(hr, k)
            if lr is None:
                problems.append(f"{ds.lr_dir(k)}: no LR image for {hr.name}")
                continue
            try:
                with Image.open(hr) as a, Image.open(lr) as b:
                    (wh, hh), (wl, hl) = a.size, b.size
            except OSError as e:
                problems.append(f"cannot read {hr.name} / {lr.name}: {e}")
                continue
            if not (hl * k <= hh < (hl + 1) * k and wl * k <= wh < (wl + 1) * k):
                problems.append(f"{lr}: {wl}x{hl} is not HR {wh}x{hh} / {k}")
    return problems


def verify(key_or_path: str, root: Path | None = None) -> DatasetFolder:
    """Check a known dataset (counts + pairs) or any folder (pairs); raise LiifError on problems."""
    ds = resolve(key_or_path, root)
    d = REGISTRY.get(ds.key) if ds.key else None
    problems = verify_folder(ds, d.n_images if d else None, d.scales if d else ())
    if problems:
        raise LiifError(f"dataset {ds.path} failed verification: {first_problems(problems)}")
    return ds


def first_problems(problems: list[str], k: int = 3) -> str:
    """The first ``k`` problems of a verification, and how many more there are."""
    more = f" (+{len(problems) - k} more)" if len(problems) > k else ""
    return "; ".join(problems[:k]) + more


def _check(a: Archive) -> Check | None:
    """The archive's sha256 where it is known, else its size where that is known."""
    if a.sha256 is not None:
        return sha256_check(a.sha256, a.filename)
    return size_check(a.size, a.filename) if a.size is not None else None


def _extract(archive: Path, members: dict[str, str], into: Path) -> None:
    """Copy the image files under each archive folder in ``members`` to ``into/<dest folder>``."""
    def place(name: str) -> Path | None:
        name = name.replace("\\", "/")
        for src, dst in members.items():
            if name.startswith(src.rstrip("/") + "/"):
                rel = name[len(src.rstrip("/")) + 1:]
                if not rel or rel.endswith("/") or Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
                    return None
                if ".." in Path(rel).parts or Path(rel).is_absolute():
                    raise LiifError(f"{archive.name}: unsafe member path {name!r}")
                return into / dst / rel
        return None

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for m in z.infolist():
                    target = place(m.filename)
                    if target is not None and not m.is_dir():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with z.open(m) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, CHUNK)
        else:
            with tarfile.open(archive) as t:
                for member in t:
                    target = place(member.name)
                    if target is not None and member.isfile():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        data = t.extractfile(member)
                        assert data is not None  # a regular file always has data
                        with data, open(target, "wb") as out:
                            shutil.copyfileobj(data, out, CHUNK)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise LiifError(f"cannot extract {archive}: {e}") from None


def fetch(key: str, root: Path | None = None, force: bool = False, progress: bool = True,
          registry: dict[str, DatasetInfo] | None = None) -> DatasetFolder:
    """Download (resumable, verified) and extract dataset ``key`` into ``<root>/<Folder>``.

    An existing folder that verifies is reused. Archives are kept in ``<root>/downloads`` (the
    benchmark sets share one). The dataset folder appears only once it is complete.
    """
    reg = registry if registry is not None else REGISTRY
    if key.lower() not in reg:
        raise LiifError(f"unknown dataset {key!r}; known: {', '.join(reg)}")
    d = reg[key.lower()]
    root = Path(root) if root is not None else data_root()
    final = root / d.folder
    if final.exists():
        if not force:
            ds = open_folder(final, d.folder)
            problems = verify_folder(ds, d.n_images, d.scales)
            if not problems:
                return ds
            raise LiifError(f"{final} exists but fails verification ({problems[0]}); "
                            f"re-fetch with --force")
        shutil.rmtree(final)
    downloads = root / "downloads"
    files = [download(a.url, downloads / a.filename, _check(a), progress)
             if not (downloads / a.filename).is_file() or force else downloads / a.filename
             for a in d.archives]
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{d.folder}.", dir=root))
    try:
        for a, f in zip(d.archives, files, strict=True):
            _extract(f, a.members, staging)
        ds = open_folder(staging, d.folder)
        problems = verify_folder(ds, d.n_images, d.scales)
        if problems:
            raise LiifError(f"{d.folder} extracted from {', '.join(a.filename for a in d.archives)} "
                            f"fails verification: {problems[0]}")
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return open_folder(final, d.folder)
