"""The ``liif`` command line. Sizes on the command line are WIDTHxHEIGHT, as in image tools."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from liif import compute, limits
from liif.bench import cli as bench_cli
from liif.data import cli as data_cli
from liif.errors import LiifError, run_reporting_errors
from liif.eval import cli as eval_cli
from liif.export import cli as export_cli
from liif.imaging import IMAGE_SUFFIXES, QUANTIZE
from liif.progress import ProgressLines
from liif.serve import cli as serve_cli
from liif.train import cli as train_cli

if TYPE_CHECKING:
    from PIL import Image

    from liif.api import Upscaler


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LiifError(f"--size must be WIDTHxHEIGHT with integers, e.g. 1920x1080; got {text!r}") from None
    if w <= 0 or h <= 0:
        raise LiifError(f"--size must be positive, got {text!r}")
    return h, w


def parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise LiifError(f"--region must be X,Y,W,H in output pixels; got {text!r}") from None
    return x, y, w, h


def parse_float(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise LiifError(f"{name} must be a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liif", description="LIIF: arbitrary-scale image super-resolution.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images (or a folder of images, or a video) to any size or scale",
                        description="Upscale an image, several images or a folder of images "
                                    "(PNG/JPEG/WebP/BMP/TIFF) with LIIF; writes PNG. "
                                    "--size is WIDTHxHEIGHT (the Python API takes size=(height, width)).")
    up.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="an image file, or a folder: every image directly in it (hidden files skipped); "
                         "or one video file (see video below)")
    up.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output .png file (one image) or folder (several images or a folder INPUT; "
                         "created if missing; each output is named like its input, with .png)")
    g = up.add_argument_group("output size (one of)")
    g.add_argument("--scale", metavar="S", help="uniform scale factor, e.g. 2, 3.5, 12")
    g.add_argument("--scale-x", metavar="SX", help="horizontal scale (with --scale-y, or --scale for the other axis)")
    g.add_argument("--scale-y", metavar="SY", help="vertical scale")
    g.add_argument("--size", metavar="WxH", help="exact output size WIDTHxHEIGHT, e.g. 1920x1080")
    up.add_argument("--region", metavar="X,Y,W,H", help="render only this window of the output (pixels)")
    up.add_argument("--weights", default="edsr-baseline-liif", help="pretrained name or checkpoint path")
    up.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    up.add_argument("--precision", default="auto", choices=list(compute.CHOICES), help=compute.CHOICES_HELP)
    up.add_argument("--quantize", default="round", choices=list(QUANTIZE),
                    help="8/16-bit output: round to nearest (default) or truncate as the official demo does "
                         "(byte parity with its PNGs; about half a level darker on average)")
    up.add_argument("--method", default="fast", choices=["fast", "reference"], help="renderer")
    up.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                    help="compute of the fast renderer (onnxruntime: fp32, CPU; needs liif[onnx])")
    up.add_argument("--onnx-dir", metavar="DIR", help="export from `liif export onnx` (default: export to the cache)")
    up.add_argument("--max-memory", metavar="BYTES",
                    help="working-memory budget of the renderer, e.g. 512M "
                         f"(default {limits.format_memory(compute.DEFAULT_MAX_MEMORY)} on the CPU, "
                         "a quarter of the GPU's memory on CUDA)")
    up.add_argument("--max-pixels", metavar="N",
                    help="refuse outputs (the rendered window) above N pixels (default 100M, or LIIF_MAX_PIXELS)")
    up.add_argument("--max-input-pixels", metavar="N",
                    help="refuse inputs above N pixels, checked on the header before decoding "
                         "(default 50M, or LIIF_MAX_INPUT_PIXELS)")
    up.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: a bar when stderr is a terminal; otherwise an image's render "
                         "prints a plain line at each 10%% of its work, at most one per 5 s)")
    up.add_argument("-v", "--verbose", action="store_true",
                    help="print the device, CPU capability and the precision that actually runs")
    v = up.add_argument_group("video (an input video by suffix or content; needs liif[video])")
    v.add_argument("--codec", help="video encoder (default libx264, .webm libvpx-vp9; e.g. libx265, ffv1)")
    v.add_argument("--crf", type=int, help="constant quality, lower is better (default 18 for x264/x265)")
    v.add_argument("--preset", help="encoder speed preset (default medium for x264/x265)")
    v.add_argument("--allow-partial", action="store_true",
                   help="write a truncated or damaged video's decodable frames instead of refusing it")
    up.set_defaults(func=cmd_upscale)

    w = sub.add_parser("weights", help="list or fetch pretrained weights")
    wsub = w.add_subparsers(dest="action", required=True)
    wsub.add_parser("list", help="known pretrained weights: source, licence, check and whether cached")
    wf = wsub.add_parser("fetch", help="download (resumable), verify and cache pretrained weights")
    wf.add_argument("name")
    wf.add_argument("--force", action="store_true", help="download again even if cached")
    w.set_defaults(func=cmd_weights)

    d = sub.add_parser("demo", help="the embedded default job: test card -> LIIF at several scales + comparison")
    d.add_argument("-o", "--output", default="demo-out", metavar="DIR")
    d.add_argument("--weights", default="edsr-baseline-liif")
    d.add_argument("--device", default=None)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks that print ratios measured in one run")
    bsub = b.add_subparsers(dest="what", required=True)
    bi = bsub.add_parser("infer", help="reference vs fast rendering in each native precision, plus peak memory",
                         description="Times the reference route and the fast route in each precision this "
                                     "hardware runs natively (bf16 on CPUs only where native), in one run, and "
                                     "prints the ratios. Finishes in a few minutes on a 2-core AVX2 CPU.")
    bi.add_argument("--weights", default="edsr-baseline-liif")
    bi.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bi.add_argument("--size", type=int, default=256, help="input side (default 256)")
    bi.add_argument("--scales", default="2,4,12")
    bi.add_argument("--repeat", type=int, default=2, help="best of N interleaved timings per path (default 2)")
    bi.add_argument("--max-window-px", type=int, default=1 << 18,
                    help="time a centred window of at most this many output pixels (default 256K)")
    bi.add_argument("--big", action="store_true",
                    help="also time whole 1920x1080 -> 3840x2160 renders in-process (GPU memory on CUDA)")
    bi.add_argument("--memory", action="store_true",
                    help="also measure peak RSS of whole `liif upscale` processes, 960x540 -> 3840x2160 (minutes)")
    bi.add_argument("--huge", action="store_true",
                    help="with --big/--memory, also the upstream issue #44 case 4608x3456 -> 9216x6912")
    bi.add_argument("--max-memory", metavar="BYTES", help="renderer budget for --big (default: the device's)")
    bi.add_argument("--compare", action="append", default=[], metavar="WEIGHTS",
                    help="instead of reference vs fast: the fast routes of --weights and of these models (repeat "
                         "the option), timed in turn on the same windows, with encoder/decoder split and MACs/px")
    bi.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    train_cli.add_bench_parser(bsub)
    bench_cli.add_viewer_parser(bsub)
    b.set_defaults(func=cmd_bench)
    eval_cli.add_eval_parser(sub)
    data_cli.add_parser(sub)
    eval_cli.add_report_parser(sub)
    export_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    train_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: args.func(args))


def cmd_upscale(args: argparse.Namespace) -> int:
    from liif import api, imaging

    size = parse_size(args.size) if args.size else None
    s = parse_float("--scale", args.scale)
    sx, sy = parse_float("--scale-x", args.scale_x), parse_float("--scale-y", args.scale_y)
    if sx is not None or sy is not None:
        sx, sy = sx if sx is not None else s, sy if sy is not None else s
        if sx is None or sy is None:
            raise LiifError("give both --scale-x and --scale-y (or --scale for the missing axis)")
        scale: tuple[float, float] | float | None = (sy, sx)
    else:
        scale = s
    if (size is None) == (scale is None):
        raise LiifError("give exactly one of --scale, --scale-x/--scale-y or --size")
    region = parse_region(args.region) if args.region else None
    max_memory = limits.parse_memory(args.max_memory) if args.max_memory is not None else None
    max_pixels = (limits.parse_count("--max-pixels", args.max_pixels) if args.max_pixels is not None
                  else limits.max_pixels())
    max_input = (limits.parse_count("--max-input-pixels", args.max_input_pixels)
                 if args.max_input_pixels is not None else limits.max_input_pixels())
    if args.device is not None:
        api.as_device(args.device)

    from liif.video import cli as video_cli
    if video_cli.wants_video(args.inputs, args.output):
        return video_cli.cli_upscale(args, size, scale, region,
                                     lambda: load_upscaler(args, max_memory, max_pixels, max_input))
    video_cli.refuse_video_options(args)
    inputs = [Path(i) for i in args.inputs]
    if any(i.is_dir() for i in inputs):
        return upscale_folders(args, inputs, size, scale, region, max_memory, max_pixels, max_input)
    outputs = output_paths(inputs, Path(args.output))
    for dst in outputs.values():  # before any work: a destination that cannot be written fails now
        imaging.check_writable(dst)
    # Decode every input and validate every size before loading the model or writing anything.
    decoded = [open_input(src, max_input) for src in outputs]
    up = load_upscaler(args, max_memory, max_pixels, max_input)
    for im in decoded:
        up.plan((im.height, im.width), size, scale, region)
    for (src, dst), im in zip(outputs.items(), decoded, strict=True):
        # Streamed to the PNG band by band: memory does not grow with the output.
        w, h = up.upscale_to_png(im, dst, size=size, scale=scale, region=region, progress=progress_for(args, src))
        print(f"{src} -> {dst} ({w}x{h})")
    return 0


def upscale_folders(args: argparse.Namespace, inputs: list[Path], size: tuple[int, int] | None,
                    scale: tuple[float, float] | float | None, region: tuple[int, int, int, int] | None,
                    max_memory: int | None, max_pixels: int, max_input: int) -> int:
    """``liif upscale photos/ -o out/``: every image directly in each folder input (files given
    beside it too) into the output folder, as PNGs named like the inputs. Images are opened one at
    a time (memory does not grow with the folder); one that fails is reported by name and the
    others go on; the exit status says how many failed."""
    from liif import imaging

    sources = [f for i in inputs for f in (imaging.image_files(i) if i.is_dir() else [i])]
    out = Path(args.output)
    outputs = output_paths(sources, out, folder=True)
    for dst in outputs.values():  # before any work: a destination that cannot be written fails now
        imaging.check_writable(dst)
    up = load_upscaler(args, max_memory, max_pixels, max_input)
    failed = 0
    for src, dst in outputs.items():
        try:
            im = open_input(src, max_input)
            w, h = up.upscale_to_png(im, dst, size=size, scale=scale, region=region, progress=progress_for(args, src))
        except LiifError as e:
            failed += 1
            reason = str(e) if str(src) in str(e) else f"{src}: {e}"
            print(f"liif: error: {reason}", file=sys.stderr)
            continue
        print(f"{src} -> {dst} ({w}x{h})")
    if failed:
        raise LiifError(f"{failed} of {len(outputs)} images failed (named above); "
                        f"{len(outputs) - failed} written to {out}")
    return 0


def load_upscaler(args: argparse.Namespace, max_memory: int | None, max_pixels: int, max_input: int) -> Upscaler:
    """The model and renderer of ``liif upscale``'s options (and the ``-v`` line, when asked)."""
    from liif import api

    up = api.load(args.weights, device=args.device, precision=args.precision, method=args.method,
                  max_memory=max_memory, max_pixels=max_pixels, backend=args.backend, onnx_dir=args.onnx_dir,
                  quantize=args.quantize, max_input_pixels=max_input)
    if args.verbose:
        print(up.describe(args.precision), file=sys.stderr)
    return up


def progress_for(args: argparse.Namespace, src: Path) -> bool | ProgressLines:
    """--progress: the tqdm bar; --no-progress: nothing; neither: the bar on a terminal, else plain
    lines for the log (``upscale NAME: 40% (864 of 2160 rows, 8 s)``), made as the image's render starts."""
    if args.progress is not None:
        return bool(args.progress)
    return True if sys.stderr.isatty() else ProgressLines(f"upscale {src.name}", "rows")


def open_input(src: Path, max_input: int) -> Image.Image:
    """Open and decode one input image (upright, first frame), warning where Pillow loses bits."""
    from liif import imaging

    im = imaging.prepare(imaging.open_image(src, max_input))
    depth = imaging.png_bit_depth(src)
    if depth == 16 and im.mode not in ("I", "I;16", "I;16B", "I;16L"):
        print(f"liif: warning: {src} is a 16-bit colour PNG; Pillow decodes it to 8 bits per channel",
              file=sys.stderr)
    return im


def output_paths(inputs: list[Path], out: Path, folder: bool = False) -> dict[Path, Path]:
    """Map inputs to output PNG paths; a folder output keeps the input names with .png.
    ``folder``: an input was a folder, so the output is a folder whatever its name."""
    if folder and out.exists() and not out.is_dir():
        raise LiifError(f"with a folder input the output must be a folder, got existing file {out}")
    if folder and not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES:
        raise LiifError(f"with a folder input the output must be a folder, got image file name {out}")
    as_file = not folder and len(inputs) == 1 and out.suffix != "" and not out.is_dir()
    if as_file and out.suffix.lower() != ".png":
        raise LiifError(f"output must be a .png file or a folder, got {out}")
    if as_file:
        result = {inputs[0]: out}
    else:
        if out.exists() and not out.is_dir():
            raise LiifError(f"with several inputs the output must be a folder, got existing file {out}")
        result = {}
        for src in inputs:
            dst = out / (src.stem + ".png")
            if dst in result.values():
                raise LiifError(f"two inputs would write the same output {dst}")
            result[src] = dst
    for dst in result.values():  # never replace an input, whatever the path spelling (links included)
        for src in inputs:
            if _same_file(src, dst):
                raise LiifError(f"the output {dst} is the input {src}; refusing to overwrite an input "
                                "(choose another output name or folder)")
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


BY_HAND = "download by hand"  # `weights list` status of a variant without a source we can fetch
BY_HAND_HOW = "`liif weights fetch` cannot get them: download the file yourself, then use --weights PATH"


def cmd_weights(args: argparse.Namespace) -> int:
    from liif import weights

    if args.action == "list":
        for name, v in weights.known().items():
            if v.pretrained is None:  # nothing we can download and verify: the user brings the file
                print(f"{name}\t{BY_HAND}\t{v.description}\n\t{v.weights_note}. {BY_HAND_HOW}")
                continue
            p = v.pretrained
            state = ("installed" if p.bundled else "cached") if weights.is_cached(name) else "not cached"
            where = f"\n\turl: {p.url}" if p.url else f" ({p.member or p.bundled})"
            file = weights.bundled_file(p) if p.bundled else weights.local_file(name)
            print(f"{name}\t{state}\t{v.description}\n\tsource: {p.origin}{where}\n\tverify: {p.verify} {p.digest}"
                  f"\n\tlicense: {p.license}\n\tfile: {file}")
        return 0
    path = weights.fetch(args.name, force=args.force)
    print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from liif.bench import cli as bench

    return bench.main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from liif import api, demo

    def say(line: str) -> None:  # what the demo is about to do, on stderr (stdout: the files written)
        print(line, file=sys.stderr, flush=True)

    say(f"demo: loading weights {args.weights}")
    up = api.load(args.weights, device=args.device)
    for p in demo.run(up, Path(args.output), say=say):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
