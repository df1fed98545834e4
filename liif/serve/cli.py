"""``liif serve``: argument parsing and start-up (FastAPI and uvicorn load only when it runs)."""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from liif.compute import CHOICES, CHOICES_HELP
from liif.errors import LiifError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("serve", help="web viewer: open or upload an image, zoom x1..x30 with LIIF",
                       description="Serve a local web page that renders only the visible window at screen "
                                   "resolution. Binds to 127.0.0.1 unless --host says otherwise.")
    s.add_argument("--weights", default="edsr-baseline-liif", help="pretrained name or checkpoint path")
    s.add_argument("--images", metavar="DIR", help="folder whose images the page may open (top level only)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    s.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    s.add_argument("--precision", default="auto", choices=list(CHOICES), help=CHOICES_HELP)
    s.add_argument("--onnx-dir", metavar="DIR", help="ONNX export for --backend onnxruntime (default: cached)")
    s.add_argument("--workers", type=int, default=None,
                   help="renders running at once (default: 1; for LMF models one per core, each decoding with "
                        "one thread)")
    s.add_argument("--queue", type=int, default=4, help="renders waiting before 503 (default 4)")
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20)")
    s.add_argument("--time-limit", type=float, default=300.0, metavar="SECONDS",
                   help="longest a render request may take, waiting included, before 504 (default 300)")
    s.add_argument("--cache-mb", type=float, default=None, metavar="MIB",
                   help="features and maps kept between renders, in MiB (default: an eighth of this machine's "
                        "memory, 256..4096; 0 turns the cache off)")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name the page may be opened by (besides localhost, 127.0.0.1, [::1] "
                        "and --host); repeat for more")
    s.set_defaults(func=cmd_serve)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on host:port, or a one-line error (busy port, unknown host)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise LiifError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise LiifError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise LiifError("liif serve needs FastAPI and uvicorn: pip install 'liif[serve]'") from None
    from liif import api
    from liif.serve.access import log_to_stderr
    from liif.serve.app import create_app
    from liif.serve.limits import Limits
    from liif.serve.security import allowed_hosts

    images = Path(args.images) if args.images else None
    if images is not None and not images.is_dir():
        raise LiifError(f"--images must be a folder: {images}")
    if ((args.workers is not None and args.workers < 1) or args.queue < 0 or args.max_upload_mb <= 0
            or not 0 < args.port < 65536 or not args.time_limit > 0
            or (args.cache_mb is not None and not args.cache_mb >= 0)):
        raise LiifError("--workers must be >= 1, --queue >= 0, --max-upload-mb > 0, --time-limit > 0, "
                        "--cache-mb >= 0 and --port in 1..65535")
    device = args.device or ("cpu" if args.backend == "onnxruntime" else None)
    sock = listen(args.host, args.port)  # before loading anything: a busy port fails at once
    try:
        up = api.load(args.weights, device=device, backend=args.backend, onnx_dir=args.onnx_dir,
                      precision=args.precision)
        cache = {} if args.cache_mb is None else {"cache_bytes": int(args.cache_mb * (1 << 20))}
        limits = Limits(upload_bytes=int(args.max_upload_mb * (1 << 20)), workers=args.workers or 0, queue=args.queue,
                        request_seconds=args.time_limit, **cache)
        app = create_app(up, images, limits, hosts=allowed_hosts(args.host, args.allow_host))

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: object) -> None:  # SIGINT/SIGTERM: stop renders too
                app.state.stop_renders()
                super().handle_exit(sig, frame)  # type: ignore[arg-type]

        # after a signal, answers still being sent get a few seconds, renders are already stopped
        server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        log_to_stderr()  # one line per request (uvicorn's own access log stays off)
        name = f"[{args.host}]" if ":" in args.host else args.host
        print(f"liif serve: http://{name}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
