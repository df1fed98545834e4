"""The ``liif data`` subcommand: list, fetch and verify the evaluation sets (:mod:`liif.data.eval_sets`)
and the tiny configs' training set (``train``: :mod:`liif.data.train_sets`); ``degrade`` makes a
camera-like degraded LR folder from an HR folder (:mod:`liif.data.degrade.folder`).

Only argparse is imported here; the fetch and verify code loads when the command runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liif.errors import LiifError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``data list|fetch|verify`` on the ``liif`` subcommand parser."""
    d = sub.add_parser("data", help="fetch or verify datasets (evaluation sets, the small training set)")
    dsub = d.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", help="known datasets, sources and whether they are present")
    df = dsub.add_parser("fetch",
                         help="download (resumable, checked) and extract into <root>/<Set>/HR, LR_bicubic/X<k>")
    df.add_argument("name", choices=["div2k", "set5", "set14", "b100", "urban100", "train"],
                    help="an evaluation set, or train (T91 + Sun-Hays 80 crops, the tiny configs' data)")
    df.add_argument("--force", action="store_true", help="download and extract again")
    dv = dsub.add_parser("verify", help="check a dataset's image counts and HR/LR pairs")
    dv.add_argument("name", help="a known dataset name (or train), or a folder path")
    dd = dsub.add_parser("degrade", help="camera-like degraded LR copies of an HR folder (blur, bicubic down, "
                                         "noise, JPEG), for `liif eval --lr-dir`")
    dd.add_argument("hr_dir", metavar="HR_DIR", help="folder of HR images")
    dd.add_argument("out_dir", metavar="OUT_DIR", help="folder for the LR PNGs (same stems as the HR files)")
    dd.add_argument("--scale", type=int, required=True, help="integer down-sampling factor")
    dd.add_argument("--seed", type=int, default=0, help="the draws of every image follow from it (default 0)")
    dd.add_argument("--blur-sigma", default="0.5,1.3", metavar="LOW,HIGH", help="Gaussian blur sigma, HR pixels")
    dd.add_argument("--noise-sigma", default="2,7", metavar="LOW,HIGH", help="Gaussian noise sigma, 0-255 scale")
    dd.add_argument("--jpeg-quality", default="45,75", metavar="LOW,HIGH", help="JPEG quality, 1-100")
    dd.add_argument("--order", choices=["classic", "hr-first"], default="classic",
                    help="classic: blur, down-sample, noise, JPEG; hr-first: blur, noise, JPEG, down-sample")
    for p in (d, df, dv):
        p.add_argument("--root", default=None, metavar="DIR", help="data root (default: $LIIF_DATA_DIR or the cache)")
    d.set_defaults(func=cmd_data)


def root_arg(text: str | None) -> Path | None:
    """A ``--root``/``--data-root`` value as a path (None: the default data root)."""
    return Path(text).expanduser() if text else None


def value_range(text: str, option: str, kind: type = float) -> tuple[float, float]:
    """``LOW,HIGH`` (or one value for both) as two numbers; a one-line error naming ``option`` otherwise."""
    parts = text.replace(" ", "").split(",")
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise LiifError(f"{option} expects LOW,HIGH ({kind.__name__}s), got {text!r}")
    return values[0], values[-1]


def cmd_degrade(args: argparse.Namespace) -> int:
    from liif.data.degrade.camera import Camera
    from liif.data.degrade.folder import degrade_folder

    cam = Camera(value_range(args.blur_sigma, "--blur-sigma"), value_range(args.noise_sigma, "--noise-sigma"),
                 value_range(args.jpeg_quality, "--jpeg-quality", int), args.order)  # type: ignore[arg-type]
    written = degrade_folder(Path(args.hr_dir).expanduser(), Path(args.out_dir).expanduser(), args.scale, args.seed,
                             cam)
    print(f"wrote {len(written)} LR images (x{args.scale}, seed {args.seed}) to {args.out_dir}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from liif.data import eval_sets, train_sets

    if args.action == "degrade":
        return cmd_degrade(args)
    root = root_arg(args.root)
    if args.action == "list":
        base = root or eval_sets.data_root()
        for d in eval_sets.REGISTRY.values():
            state = "present" if (base / d.folder / "HR").is_dir() else "not fetched"
            print(f"{d.key}\t{d.folder}\t{d.n_images} images\t{state} ({base / d.folder})")
            for a in d.archives:
                print(f"\t{a.url}\tsha256 {a.sha256 or 'unknown (verified by structure)'}")
        for part in train_sets.PARTS:
            folder = base / "train" / part.folder
            state = "present" if folder.is_dir() else "not fetched"
            print(f"train\ttrain/{part.folder}\t{len(part.files)} images\t{state} ({folder})")
            print(f"\t{part.base_url}<file>\tno published checksums (verified by structure)")
        return 0
    if args.action == "fetch" and args.name == "train":
        for folder in train_sets.fetch(root, force=args.force, progress=sys.stderr.isatty()):
            print(f"train/{folder.name}: {len(list(folder.glob('*.png')))} images at {folder}")
        return 0
    if args.action == "verify" and args.name == "train":
        for folder in train_sets.verify(root):
            print(f"{folder}: OK ({len(list(folder.glob('*.png')))} images)")
        return 0
    if args.action == "fetch":
        ds = eval_sets.fetch(args.name, root, force=args.force, progress=sys.stderr.isatty())
        print(f"{ds.name}: {len(ds.hr_files)} images at {ds.path}")
        return 0
    ds = eval_sets.verify(args.name, root)
    scales = sorted(int(p.name[1:]) for p in (ds.path / "LR_bicubic").glob("X*") if p.name[1:].isdigit())
    print(f"{ds.path}: OK ({len(ds.hr_files)} HR images; LR scales {', '.join(f'x{s}' for s in scales) or 'none'})")
    return 0
