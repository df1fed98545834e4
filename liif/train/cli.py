"""``liif train``: argument parsing and the command (the loop lives in liif.train.loop)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from liif.errors import LiifError, run_reporting_errors


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML training config, e.g. configs/tiny-cpu.yaml")
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set train.lr=2e-4 (repeatable)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop cleanly after M minutes of wall-clock time, saving a checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in DIR/checkpoints (last or epoch-N)")
    p.add_argument("--restart", action="store_true",
                   help="start over in a DIR that holds an earlier run; its files are moved into DIR/previous-N")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="S",
                   help="under torchrun: seconds a collective may wait for the other ranks before every rank "
                        "stops with an error (default $LIIF_DIST_TIMEOUT or 1800)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="where the config's data: paths live (default $LIIF_DATA_DIR, else the cache's datasets/)")


DEFAULT_BENCH_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train-edsr-baseline-liif.yaml"
DEFAULT_BENCH_DATA = ["data:train/T91", "data:train/SunHays80"]  # `liif data fetch train`


def add_bench_parser(bsub: argparse._SubParsersAction) -> None:
    """``liif bench train`` (dispatched by liif.bench.cli to liif.train.bench.main)."""
    p = bsub.add_parser("train", help="training samples/s: reference loop vs ours, and the ratio")
    p.add_argument("--config", default=str(DEFAULT_BENCH_CONFIG), help="training config (default: EDSR-baseline-LIIF)")
    p.add_argument("--data", nargs="+", default=DEFAULT_BENCH_DATA, metavar="DIR",
                   help="training image folders used instead of the config's (default: the tiny configs' "
                        "training set under the data root, from `liif data fetch train`)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="where data: paths live (default $LIIF_DATA_DIR, else the cache's datasets/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variants", default="auto", metavar="V[,V...]",
                   help="our loops, each PRECISION[:nofold][:nchw][:compile] with PRECISION auto (default: what "
                        "the hardware runs natively), fp32, tf32 (CUDA), bf16 or fp16 (CUDA); e.g. "
                        "fp32,tf32,bf16,bf16:compile. Variants that would run emulated here are skipped, saying why")
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG",
                   help="also time the model of this config (its model section; repeat the option) in each "
                        "variant, on the same batches, steps alternating with the others")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--loader-workers", type=int, nargs="*", default=[], metavar="N",
                   help="also time the data loader alone with N worker processes (each N given)")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed per loader measurement")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--iters", type=int, default=3, help="timed steps per loop (after one warm-up step)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("train", help="train a LIIF model (one process, or many under torchrun)",
                       description="Train LIIF from a YAML config. Under torchrun every process runs this "
                                   "command; rank 0 logs and writes checkpoints. See docs/training.md.")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from liif.train import config, loop

    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        raise LiifError(f"--max-minutes must be a finite number > 0, got {args.max_minutes}")
    if args.resume and args.restart:
        raise LiifError("--resume and --restart exclude each other")
    timeout = args.dist_timeout
    if timeout is None:
        try:
            timeout = float(os.environ.get("LIIF_DIST_TIMEOUT", "1800"))
        except ValueError:
            raise LiifError(f"LIIF_DIST_TIMEOUT must be a number of seconds, "
                            f"got {os.environ['LIIF_DIST_TIMEOUT']!r}") from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise LiifError("--dist-timeout (or LIIF_DIST_TIMEOUT) must be positive")
    from liif.data.cli import root_arg

    # every config error surfaces here, before training
    cfg = config.load(args.config, args.overrides, data_root=root_arg(args.data_root))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    summary = loop.train(cfg, out, resume=args.resume, max_minutes=args.max_minutes, progress=args.progress,
                         restart=args.restart, dist_timeout_s=timeout)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, allow_nan=False), file=sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python train.py CONFIG ...``: the same command without the ``liif`` prefix."""
    p = argparse.ArgumentParser(prog="train.py", description="Train LIIF from a YAML config (see docs/training.md).")
    add_train_arguments(p)
    args = p.parse_args(argv)
    return run_reporting_errors(lambda: cmd_train(args))
