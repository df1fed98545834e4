"""``liif serve``: argument parsing and start-up (FastAPI and uvicorn load only when it runs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liif.errors import LiifError


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    s = sub.add_parser("serve", help="web viewer: open or upload an image, zoom x1..x30 with LIIF",
                       description="Serve a local web page that renders only the visible window at screen "
                                   "resolution. Binds to 127.0.0.1 unless --host says otherwise.")
    s.add_argument("--weights", default="edsr-baseline-liif", help="pretrained name or checkpoint path")
    s.add_argument("--images", metavar="DIR", help="folder whose images the page may open (top level only)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    s.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    s.add_argument("--onnx-dir", metavar="DIR", help="ONNX export for --backend onnxruntime (default: cached)")
    s.add_argument("--workers", type=int, default=1, help="renders running at once (default 1)")
    s.add_argument("--queue", type=int, default=4, help="renders waiting before 503 (default 4)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20)")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise LiifError("liif serve needs FastAPI and uvicorn: pip install 'liif[serve]'") from None
    from liif import api
    from liif.serve.app import Limits, create_app

    images = Path(args.images) if args.images else None
    if images is not None and not images.is_dir():
        raise LiifError(f"--images must be a folder: {images}")
    if args.workers < 1 or args.queue < 0 or args.max_upload_mb <= 0 or not 0 < args.port < 65536:
        raise LiifError("--workers must be >= 1, --queue >= 0, --max-upload-mb > 0 and --port in 1..65535")
    device = args.device or ("cpu" if args.backend == "onnxruntime" else None)
    up = api.load(args.weights, device=device, backend=args.backend, onnx_dir=args.onnx_dir)
    limits = Limits(upload_bytes=int(args.max_upload_mb * (1 << 20)), workers=args.workers, queue=args.queue)
    app = create_app(up, images, limits)
    print(f"liif serve: http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
