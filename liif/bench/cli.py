"""``liif bench WHAT``: runs ``infer`` (:mod:`liif.bench.infer`), ``train`` (:mod:`liif.train.bench`) or
``viewer`` (:mod:`liif.bench.viewer`)."""
from __future__ import annotations

import argparse
from typing import Any


def main(args: argparse.Namespace) -> int:
    if args.what == "train":
        from liif.train import bench as train_bench

        return int(train_bench.main(args))
    if args.what == "viewer":
        from liif.bench import viewer

        return viewer.main(args)
    from liif.bench import infer

    return infer.main(args)


def add_viewer_parser(bsub: Any) -> None:
    """``liif bench viewer``'s arguments (the bench itself loads only when it runs)."""
    bv = bsub.add_parser("viewer", help="time the viewer page in headless Chromium: open, deep link, pan, zoom",
                         description="Drives the real viewer page in headless Chromium against an in-process "
                                     "server and prints, per model, the seconds until the view is sharp.")
    bv.add_argument("--weights", action="append", help="pretrained name or checkpoint (repeat for several; "
                                                       "default edsr-baseline-liif)")
    bv.add_argument("--precision", default="auto")
    bv.add_argument("--image-size", default="480x320", metavar="WxH")
    bv.add_argument("--window", default="1280x800", metavar="WxH", help="browser window in CSS pixels")
    bv.add_argument("--timeout", type=float, default=300.0, help="seconds any one step may take")
    bv.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
