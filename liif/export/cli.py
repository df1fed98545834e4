"""The ``liif export onnx`` command (``liif serve`` is registered from :mod:`liif.serve.cli`).

Only argparse is imported here; the heavy modules load when a command runs.
"""
from __future__ import annotations

import argparse

from liif.errors import LiifError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``export onnx`` on the ``liif`` subcommand parser."""
    e = sub.add_parser("export", help="export a model for other runtimes (ONNX)")
    esub = e.add_subparsers(dest="format", required=True)
    o = esub.add_parser("onnx", help="encoder, maps and decoder ONNX graphs (opset 17, dynamic sizes)",
                        description="Write encoder.onnx, maps.onnx, decoder.onnx (and global.onnx for LTE) and "
                                    "liif-onnx.json to DIR; "
                                    "run them with `liif upscale --backend onnxruntime --onnx-dir DIR`.")
    o.add_argument("--weights", default="edsr-baseline-liif", help="pretrained name or checkpoint path")
    o.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    o.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from liif import checkpoints, weights

    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise LiifError("ONNX export needs the onnx package: pip install 'liif[onnx]'") from None
    from liif.export.onnx import MANIFEST, check_target, export, graphs_of

    check_target(args.output)  # before the model loads
    model, spec = checkpoints.load(weights.path(args.weights))
    out = export(model, spec, args.output)
    for g in graphs_of(model) + (MANIFEST,):
        print(out / g)
    return 0
