"""``liif bench WHAT``: runs ``infer`` (:mod:`liif.bench.infer`) or ``train`` (:mod:`liif.train.bench`)."""
from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    if args.what == "train":
        from liif.train import bench as train_bench

        return int(train_bench.main(args))
    from liif.bench import infer

    return infer.main(args)
