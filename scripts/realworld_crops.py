"""Side-by-side crops of the real-world model card: bicubic, official, real-world, HR of one degraded image.

    python scripts/realworld_crops.py --image img_005 --scale 3 --box 150,60,160 -o docs/realworld-crops.png

The LR input is ``liif data degrade``'s (seed 7, the order given) of ``<set>/HR/<image>.png``, made under
``--work`` as ``scripts/score_realworld.py`` makes it (the same file when that script ran first). Each
panel is the HR-sized output cropped to ``--box X,Y,SIZE`` (HR pixels), enlarged ``--zoom`` times by
pixel repetition; bicubic is PIL's of the same LR. fp32.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from PIL import Image

from liif import api
from liif.data import eval_sets
from liif.fileio import atomic_path

ROOT = Path(__file__).resolve().parents[1]
GAP = 6  # white pixels between panels


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="Set14")
    p.add_argument("--image", default="img_005", help="file stem in <set>/HR")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--order", default="classic", choices=["classic", "hr-first"])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--box", default="150,60,160", help="X,Y,SIZE of the crop in HR pixels")
    p.add_argument("--zoom", type=int, default=2)
    p.add_argument("--models", default="edsr-baseline-liif,edsr-baseline-liif-realworld")
    p.add_argument("--work", default="runs/degraded")
    p.add_argument("-o", "--out", default="docs/realworld-crops.png")
    args = p.parse_args()
    x, y, size = (int(v) for v in args.box.split(","))
    hr_dir = eval_sets.resolve(args.set.lower()).path / "HR"
    lr_dir = ROOT / args.work / f"seed{args.seed}" / args.order / args.set / f"X{args.scale}"
    if not (lr_dir / f"{args.image}.png").is_file():
        done = subprocess.run([sys.executable, "-m", "liif.cli", "data", "degrade", str(hr_dir), str(lr_dir), "--scale",
                               str(args.scale), "--seed", str(args.seed), "--order", args.order],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"crops: liif data degrade failed: {done.stderr.strip()}")
    hr = Image.open(hr_dir / f"{args.image}.png").convert("RGB")
    lr = Image.open(lr_dir / f"{args.image}.png").convert("RGB")
    h, w = lr.height * args.scale, lr.width * args.scale  # the HR cropped to a multiple of the scale
    if x + size > w or y + size > h:
        sys.exit(f"crops: the box {args.box} leaves the {w}x{h} output")
    panels = [lr.resize((w, h), Image.Resampling.BICUBIC)]
    for name in args.models.split(","):
        panels.append(api.load(name, device="cpu", precision="fp32").upscale(lr, size=(h, w)))
    panels.append(hr.crop((0, 0, w, h)))
    side = size * args.zoom
    sheet = Image.new("RGB", (len(panels) * side + (len(panels) - 1) * GAP, side), "white")
    for k, im in enumerate(panels):
        crop = im.crop((x, y, x + size, y + size)).resize((side, side), Image.Resampling.NEAREST)
        sheet.paste(crop, (k * (side + GAP), 0))
    with atomic_path(Path(args.out)) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"{args.out}: {' | '.join(['bicubic', *args.models.split(','), 'HR'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
