"""``liif data degrade HR_DIR OUT_DIR``: a degraded LR copy of every image of a folder (:mod:`.camera`).

Each output is ``OUT_DIR/<stem>.png``, written through a temp file and renamed, so an interrupted run
leaves whole files only. An image's degradation is drawn from a generator seeded by (seed, scale,
CRC-32 of its file name): the same command gives the same files, whatever else the folder holds.
Every input's header is read (and its size checked against the scale) before anything is written.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from liif.data.degrade.camera import Camera, degrade
from liif.data.folders import list_images
from liif.errors import LiifError
from liif.imaging import read_rgb
from liif.imaging.files import save_png


def image_rng(seed: int, scale: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, scale, zlib.crc32(name.encode())])


def degrade_folder(hr_dir: Path, out_dir: Path, scale: int, seed: int, cam: Camera) -> list[Path]:
    """Write the degraded LR of every image of ``hr_dir`` into ``out_dir``; returns the files written."""
    cam.check()
    if scale < 1:
        raise LiifError(f"--scale must be an integer >= 1, got {scale}")
    if seed < 0:
        raise LiifError(f"--seed must be >= 0, got {seed}")
    files = list_images(hr_dir, "HR folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise LiifError(f"output {out_dir} exists and is not a folder")
    if out_dir.resolve() == hr_dir.resolve():
        raise LiifError(f"the output folder is the HR folder {hr_dir}: the LR files would replace the HR ones")
    stems = [f.stem for f in files]
    if len(set(stems)) < len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise LiifError(f"{hr_dir} holds several images named {twice}.*: their LR files would share {twice}.png")
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
        except OSError as e:
            raise LiifError(f"cannot read image {f}: {e}") from None
        if w < scale or h < scale:
            raise LiifError(f"{f} ({w}x{h}) is smaller than the scale x{scale}")
    written = []
    for f in files:
        lr = degrade(read_rgb(f), scale, cam, image_rng(seed, scale, f.name))
        written.append(save_png(Image.fromarray(lr), out_dir / f"{f.stem}.png"))
    return written
