"""The small training set of the tiny configs: T91 and the Sun-Hays 80 crops, fetched file by file.

``liif data fetch train`` writes ``<data root>/train/T91`` (the 91 images of Yang et al. 2010, BMP in
the source, stored as PNG) and ``<data root>/train/SunHays80`` (the central 384 x 384 crop of each of
the 80 Sun-Hays HR images). Each source file is downloaded (resumably) into
``<data root>/downloads/<part>/``; no public source lists checksums of these files, so each part is
verified by structure: every expected name present, every file decodes, every image at least
``min_side`` pixels on each side (and the crops exactly ``crop`` x ``crop``). A part's folder appears
only once it is complete and verified.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from liif.data.eval_sets import first_problems
from liif.download import download
from liif.data.roots import data_root
from liif.errors import LiifError

# T91's file names: t1..t66 without t41, tt1..tt27 without tt11 (91 in all).
_T91 = tuple([f"t{i}" for i in range(1, 67) if i != 41] + [f"tt{i}" for i in range(1, 28) if i != 11])


@dataclass(frozen=True)
class Part:
    """One folder of the training set: ``<root>/train/<folder>/<stem>.png`` for each source file."""

    folder: str
    base_url: str  # a source file's URL is base_url + its name
    files: tuple[tuple[str, str], ...]  # (source file name, output stem)
    min_side: int  # smallest side any image may have (the source's smallest)
    crop: int | None = None  # central square crop, in pixels; None keeps the whole image

    @property
    def stems(self) -> list[str]:
        return [stem for _, stem in self.files]


# The tiny configs' data. T91: the copy in tegg89/SRCNN-Tensorflow (Train/, BMP); Sun-Hays 80: the HR
# images in jbhuang0604/SelfExSR (data/Sun-Hays80/image_SRF_8), pinned to a commit that holds them.
PARTS: tuple[Part, ...] = (
    Part("T91", "https://raw.githubusercontent.com/tegg89/SRCNN-Tensorflow/master/Train/",
         tuple((f"{n}.bmp", n) for n in _T91), min_side=70),
    Part("SunHays80", "https://raw.githubusercontent.com/jbhuang0604/SelfExSR/"
                      "18e00f2d1bd3941e9b8d4895d3541543ad86d5b2/data/Sun-Hays80/image_SRF_8/",
         tuple((f"img_{i:03d}_SRF_8_HR.png", f"img_{i:03d}") for i in range(1, 81)), min_side=384, crop=384),
)


def central_crop(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def verify_part(folder: Path, part: Part) -> list[str]:
    """Problems with a fetched part (empty list = fine): missing names, unreadable or small images."""
    if not folder.is_dir():
        return [f"{folder} is missing"]
    problems: list[str] = []
    present = {p.stem for p in folder.glob("*.png")}
    missing = [s for s in part.stems if s not in present]
    if missing:
        problems.append(f"{folder}: {len(missing)} of {len(part.stems)} images missing (e.g. {missing[0]}.png)")
    extra = sorted(present - set(part.stems))
    if extra:
        problems.append(f"{folder}: unexpected images (e.g. {extra[0]}.png)")
    for stem in part.stems:
        path = folder / f"{stem}.png"
        if not path.is_file():
            continue
        try:
            with Image.open(path) as im:
                im.load()
                w, h = im.size
        except OSError as e:
            problems.append(f"cannot read {path}: {e}")
            continue
        if part.crop is not None and (w, h) != (part.crop, part.crop):
            problems.append(f"{path}: {w}x{h}, expected {part.crop}x{part.crop}")
        elif min(w, h) < part.min_side:
            problems.append(f"{path}: {w}x{h} is smaller than {part.min_side} px on a side")
    return problems


def _convert(src: Path, dst: Path, part: Part) -> None:
    """Source file -> RGB PNG (cropped when the part says so); a clear error if it is not an image."""
    try:
        with Image.open(src) as im:
            rgb = im.convert("RGB")
    except OSError as e:
        raise LiifError(f"{src} is not a readable image ({e}); delete it and fetch again") from None
    if part.crop is not None:
        if min(rgb.size) < part.crop:
            raise LiifError(f"{src}: {rgb.size[0]}x{rgb.size[1]} is smaller than the {part.crop} px crop")
        rgb = central_crop(rgb, part.crop)
    rgb.save(dst, format="PNG")


def fetch_part(part: Part, root: Path, force: bool = False, progress: bool = True) -> Path:
    """Download, convert and verify one part into ``<root>/train/<folder>``; reuse it when it verifies."""
    final = root / "train" / part.folder
    if final.exists():
        if not force:
            problems = verify_part(final, part)
            if not problems:
                return final
            raise LiifError(f"{final} exists but fails verification ({problems[0]}); re-fetch with --force")
        shutil.rmtree(final)
    downloads = root / "downloads" / part.folder
    todo = sum(force or not (downloads / name).is_file() for name, _ in part.files)
    if todo:
        print(f"data: train/{part.folder}: downloading {todo} of {len(part.files)} files from {part.base_url}",
              file=sys.stderr, flush=True)
    sources = []
    for name, _ in part.files:
        dest = downloads / name
        if force or not dest.is_file():
            download(part.base_url + name, dest, progress=progress)
        sources.append(dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{part.folder}.", dir=final.parent))
    try:
        for src, (_, stem) in zip(sources, part.files, strict=True):
            _convert(src, staging / f"{stem}.png", part)
        problems = verify_part(staging, part)
        if problems:
            raise LiifError(f"train/{part.folder} fails verification: {problems[0]}")
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


def fetch(root: Path | None = None, force: bool = False, progress: bool = True) -> list[Path]:
    """``liif data fetch train``: every part of the training set under ``<root>/train``."""
    base = Path(root) if root is not None else data_root()
    return [fetch_part(p, base, force, progress) for p in PARTS]


def verify(root: Path | None = None) -> list[Path]:
    """Check every part under ``<root>/train``; raise LiifError naming the first problems."""
    base = Path(root) if root is not None else data_root()
    problems = [msg for p in PARTS for msg in verify_part(base / "train" / p.folder, p)]
    if problems:
        raise LiifError(f"training set under {base / 'train'} failed verification: "
                        f"{first_problems(problems)}; run `liif data fetch train`")
    return [base / "train" / p.folder for p in PARTS]
