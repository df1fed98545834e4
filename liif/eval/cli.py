"""The ``eval`` and ``report`` subcommands (registered by ``liif.cli.build_parser``).

Only argparse is imported here; the evaluation code loads when a command runs.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from liif.compute import CHOICES
from liif.data.cli import root_arg
from liif.errors import LiifError
from liif.fileio import write_text_atomic

DEFAULT_SCALES = {  # the scales of the published tables for each protocol
    "benchmark": "2,3,4,6,8",
    "div2k": "2,3,4,6,12,18,24,30",
    "mmagic": "2,3,4,6,18,30",
}


def add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``eval`` on the ``liif`` subcommand parser."""
    e = sub.add_parser("eval", help="PSNR/SSIM of weights on a dataset under a published protocol",
                       description="Evaluate LIIF weights on a dataset folder (HR/ + LR_bicubic/X<k>/) or a "
                                   "fetched dataset; prints the summary, and writes per-image CSV and summary "
                                   "Markdown + JSON only with -o DIR.")
    e.add_argument("--weights", default="edsr-baseline-liif", help="pretrained name or checkpoint path")
    e.add_argument("--dataset", required=True, help="set5, set14, b100, urban100, div2k, or a folder path")
    e.add_argument("--scales", default=None, help="comma-separated integer scales (default: the protocol's "
                                                  "published scales)")
    e.add_argument("--protocol", choices=["benchmark", "div2k", "mmagic"], default=None,
                   help="default: div2k for DIV2K, benchmark otherwise")
    e.add_argument("--lr", choices=["auto", "pil"], default="auto",
                   help="auto: MATLAB LR files for x2-x4 under the paper protocols; pil: always PIL bicubic")
    e.add_argument("--lr-dir", default=None, metavar="DIR",
                   help="read the LR inputs of the one scale in --scales from DIR (same stems as the HR files, "
                        "e.g. made by `liif data degrade`) instead of the dataset's LR_bicubic/X<k>")
    e.add_argument("--gt-mod", type=int, default=None, metavar="N",
                   help="crop the HR top-left to a multiple of N first (OpenMMLab's GTmod12 sets: 12)")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    e.add_argument("--png", choices=["round", "truncate"], default=None,
                   help="score the output as saved to an 8-bit PNG, rounded (liif upscale's default) or "
                        "truncated (the official demo, --quantize truncate); default: the float output")
    e.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="write per-image CSV and summary Markdown + JSON into DIR (default: write no files)")
    e.add_argument("--json", metavar="OUT", help="also write the summary records to this JSON file")
    _common(e)
    e.set_defaults(func=cmd_eval)


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report`` on the ``liif`` subcommand parser."""
    r = sub.add_parser("report", help="reproduction report (Markdown + PSNR-vs-scale plot) against the paper")
    r.add_argument("--weights", default="edsr-baseline-liif")
    r.add_argument("--datasets", default=None,
                   help="comma-separated names or folders (default: every known dataset under the data root)")
    r.add_argument("--scales", default=None, help="default: the paper's scales for each protocol")
    r.add_argument("-o", "--output", required=True, metavar="DIR")
    _common(r)
    r.set_defaults(func=cmd_report)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, metavar="DIR", help="where named datasets live "
                                                                    "(default: $LIIF_DATA_DIR or the cache)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--precision", default="fp32", choices=list(CHOICES),
                   help="default fp32: published figures are fp32 (auto: what the hardware runs natively)")
    p.add_argument("--method", default="fast", choices=["fast", "reference"], help="renderer")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar per dataset (default: when stderr is a terminal)")


def _load(args: argparse.Namespace):
    from liif import api

    return api.load(args.weights, device=args.device, precision=args.precision, method=args.method)


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def cmd_eval(args: argparse.Namespace) -> int:
    from liif.data import eval_sets
    from liif.eval import protocols, report

    ds = eval_sets.resolve(args.dataset, root_arg(args.data_root))
    prot = protocols.protocol(args.protocol or protocols.default_protocol(ds))
    scales = protocols.parse_scales(args.scales or DEFAULT_SCALES[prot.name])
    if args.gt_mod is not None and args.gt_mod < 1:
        raise LiifError("--gt-mod must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise LiifError("--limit must be >= 1")
    if args.lr_dir is not None:
        if len(scales) != 1 or args.lr == "pil":
            raise LiifError("--lr-dir gives the LR files of one scale: pass exactly one --scales value "
                            "(and not --lr pil)")
        lr_dir = Path(args.lr_dir).expanduser()
        ds.lr_dirs[scales[0]] = lr_dir
        ds.name = f"{ds.name}-{lr_dir.name}"  # the scores are not the clean set's: say so in every table
    protocols.check_inputs(ds, scales, prot, args.lr)  # before loading the model
    up = _load(args)
    images = ds.hr_files[: args.limit] if args.limit else None
    scores = protocols.evaluate(up, ds, scales, prot, args.lr, args.gt_mod, _progress(args), images, args.png)
    summaries = protocols.summarize(scores)
    paths = (report.write_results(scores, summaries, Path(args.output), f"{ds.name}-{prot.name}", up.spec.encoder,
                                  up.spec.method)
             if args.output is not None else [])
    if args.json:
        paths.append(report.write_json(report.records(summaries, up.spec.encoder, up.spec.method), Path(args.json)))
    print(report.summary_markdown(summaries, up.spec.encoder, up.spec.method))
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from liif.data import eval_sets
    from liif.eval import protocols, report

    root = root_arg(args.data_root)
    if args.datasets:
        folders = [eval_sets.resolve(n.strip(), root) for n in args.datasets.split(",") if n.strip()]
    else:
        base = root or eval_sets.data_root()
        folders = [eval_sets.open_folder(base / d.folder, d.folder) for d in eval_sets.REGISTRY.values()
                   if (base / d.folder / "HR").is_dir()]
        if not folders:
            raise LiifError(f"no datasets under {base}; run `liif data fetch set5` or pass --datasets FOLDER,...")
    plans = []
    for ds in folders:
        prot = protocols.protocol(protocols.default_protocol(ds))
        scales = protocols.parse_scales(args.scales or DEFAULT_SCALES[prot.name])
        protocols.check_inputs(ds, scales, prot, "auto")
        plans.append((ds, prot, scales))
    up = _load(args)
    out = Path(args.output)
    summaries = []
    for ds, prot, scales in plans:
        scores = protocols.evaluate(up, ds, scales, prot, progress=_progress(args))
        s = protocols.summarize(scores)
        report.write_results(scores, s, out, f"{ds.name}-{prot.name}", up.spec.encoder, up.spec.method)
        summaries += s
    series = report.report_series(summaries, up.spec.encoder, up.spec.method)
    plot = report.plot_psnr_vs_scale(series, out / "psnr_vs_scale.png",
                                     f"{args.weights}: PSNR vs scale")
    command = "liif " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "liif report"
    md = report.report_markdown(summaries, str(args.weights), up.spec.encoder, plot.name, command, up.spec.method)
    report.write_json(report.records(summaries, up.spec.encoder, up.spec.method), out / "report.json")
    print(f"wrote {write_text_atomic(out / 'report.md', md)}")
    print(f"wrote {plot}")
    return 0
