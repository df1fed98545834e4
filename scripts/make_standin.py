"""A stand-in for DIV2K's training HR set where DIV2K cannot travel (an offline GPU machine).

N images of W x H (DIV2K: 800 of about 2040 x 1356), each a mosaic of randomly chosen, randomly
scaled (x1..x3, bicubic) and flipped tiles cut from the source folders (default: T91 of
`liif data fetch train`). Textures repeat, so it measures throughput, not final quality.

Usage: python scripts/make_standin.py OUT_DIR [--n 800] [--size 2040x1356] [--src DIR ...]
"""
from __future__ import annotations

import argparse
import random
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from liif.data.roots import data_root

ROOT = Path(__file__).resolve().parents[1]


def make(job: tuple[int, list[Path], tuple[int, int], Path]) -> None:
    i, sources, (w, h), out = job
    rng = random.Random(i)
    canvas = Image.new("RGB", (w, h))
    y = 0
    while y < h:
        x, row_h = 0, 0
        while x < w:
            tile = Image.open(rng.choice(sources)).convert("RGB")
            s = rng.uniform(1.0, 3.0)
            tile = tile.resize((int(tile.width * s), int(tile.height * s)), Image.Resampling.BICUBIC)
            if rng.random() < 0.5:
                tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(tile, (x, y))
            x += tile.width
            row_h = max(row_h, tile.height)
        y += row_h
    canvas.save(out / f"{i:04d}.png", compress_level=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--size", default="2040x1356")
    p.add_argument("--src", nargs="+", default=[str(data_root() / "train" / "T91")])
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    sources = sorted(f for s in a.src for f in Path(s).iterdir() if f.suffix.lower() in (".png", ".jpg", ".bmp"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with Pool() as pool:
        pool.map(make, [(i, sources, (w, h), out) for i in range(a.n)])
    print(f"{a.n} images of {w}x{h} in {out} from {len(sources)} source images")


if __name__ == "__main__":
    main()
