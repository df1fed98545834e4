"""The viewer's web server (FastAPI): served/uploaded images, window renders, downloads.

The page asks for exactly the pixels it shows: ``/api/render`` takes the virtual output size
(W, H) at screen resolution and the visible window (x, y, w, h) of it, and answers a PNG of that
window rendered with region rendering (the same pixels as the crop of the full render). Every
render, LIIF or bicubic, goes through :class:`RenderGate`: a few run at once in a thread pool, a
few wait, the rest get 503 at once; a render stops early when its client leaves, when it runs past
the time limit (504) or when the server shuts down.

Limits (see :class:`Limits`): bytes and pixels of uploads and served files (pixels read from the
header, before decoding), pixels per view and per download, scale per axis, seconds per request.
Only regular files directly inside the ``images`` folder are readable: each is opened once,
relative to the folder's descriptor and without following a link, and checked on that descriptor
(anything else is 404). Uploads are decoded and kept in memory (a bounded number), never added to
the folder. :class:`Guard` answers only requests that name an allowed host, refuses cross-origin
uploads, and adds the security headers (CSP and friends) to every answer.
"""
from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import stat
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from liif import imaging
from liif.api import RenderCancelled, Upscaler

STATIC = Path(__file__).parent / "static"
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
FORMATS = {"PNG", "JPEG", "WEBP", "BMP"}
UPLOAD_TYPES = {"image/png", "image/jpeg", "image/webp", "image/bmp", "application/octet-stream", ""}
MAX_SIDE = 1 << 20  # sanity bound on any size parameter before the real limits apply
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # always allowed in the Host header
WILDCARD_BINDS = {"", "0.0.0.0", "::"}  # bind addresses that are no host name a browser uses
# The page is one HTML file, one script and one style sheet (no inline code); images arrive as blobs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(k.encode(), v.encode()) for k, v in (
    ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"), ("Cross-Origin-Resource-Policy", "same-origin"))]


@dataclass(frozen=True)
class Limits:
    upload_bytes: int = 20 << 20
    input_pixels: int = 12_000_000  # decoded pixels of an uploaded or served image (checked on the header)
    served_bytes: int = 100 << 20  # one file of the images folder
    view_pixels: int = 4_200_000  # one /api/render window: a 2560x1600 screen
    download_pixels: int = 16_800_000  # one /api/download: 4K UHD x 2
    max_scale: float = 64.0  # output/input per axis: x30 zoom at device pixel ratio 2, with margin
    workers: int = 1  # renders running at once
    queue: int = 4  # renders waiting; beyond that 503
    uploads_kept: int = 16  # uploaded images kept in memory, oldest dropped
    request_seconds: float = 300.0  # one render request, waiting included; beyond that 504


@dataclass
class _Job:
    deadline: float  # time.monotonic() after which the render stops
    gone: bool = False  # the client disconnected
    over: bool = False  # nobody waits for the result any more


class RenderGate:
    """At most ``workers`` renders run (in a thread pool), at most ``queue`` wait; ``run`` refuses
    the rest at once. Counters live on the event loop, so no lock is needed.

    A render is a function of a ``stop()`` callable, which it calls between stripes (see
    ``Upscaler.upscale(cancel=...)``); ``stop()`` turns True when the client disconnects, when
    ``seconds`` have passed since the request was admitted, or after :meth:`close`."""

    def __init__(self, workers: int, queue: int, seconds: float = Limits.request_seconds) -> None:
        self.workers, self.queue, self.seconds = workers, queue, seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liif-render")
        self.slots = asyncio.Semaphore(workers)
        self.loop = asyncio.get_running_loop()
        self.admitted = self.running = 0
        self.peak_admitted = self.peak_running = 0
        self.refused = self.cancelled = 0
        self.closing = False

    def close(self) -> None:
        """Refuse new renders and stop the running ones at their next stripe. It only sets a flag,
        so a signal handler or another thread may call it."""
        self.closing = True

    async def run(self, request: Request, fn: Callable[[Callable[[], bool]], bytes]) -> bytes:
        if self.closing:
            raise HTTPException(503, "the server is shutting down")
        if self.admitted >= self.workers + self.queue:
            self.refused += 1
            raise HTTPException(503, "the renderer is busy; retry shortly", headers={"Retry-After": "1"})
        job = _Job(time.monotonic() + self.seconds)
        self.admitted += 1
        self.peak_admitted = max(self.peak_admitted, self.admitted)
        try:
            async with self.slots:
                if await request.is_disconnected():  # the page moved on while this waited
                    raise HTTPException(499, "client went away")
                if self.closing:
                    raise HTTPException(503, "the server is shutting down")
                if time.monotonic() > job.deadline:  # waited its whole time in the queue
                    raise HTTPException(504, f"no render slot within the {self.seconds:g} s allowed per request")
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
                try:
                    return await self._render(request, fn, job)
                finally:
                    self.running -= 1
        finally:
            self.admitted -= 1

    async def _render(self, request: Request, fn: Callable[[Callable[[], bool]], bytes], job: _Job) -> bytes:
        def stop() -> bool:  # called from the render thread
            return job.gone or job.over or self.closing or time.monotonic() > job.deadline

        watcher = asyncio.ensure_future(self._watch(request, job))
        try:
            return await self.loop.run_in_executor(self.pool, fn, stop)
        except RenderCancelled:
            self.cancelled += 1
            if self.closing:
                raise HTTPException(503, "the server is shutting down") from None
            if job.gone:
                raise HTTPException(499, "client went away") from None
            raise HTTPException(504, f"the render took longer than the {self.seconds:g} s allowed per request; "
                                     "ask for fewer pixels") from None
        finally:
            job.over = True  # also when this task itself is cancelled: the thread stops at its next stripe
            watcher.cancel()

    @staticmethod
    async def _watch(request: Request, job: _Job) -> None:
        """Note a disconnect while the render runs (it ends when the render does)."""
        while not job.over:
            if await request.is_disconnected():
                job.gone = True
                return
            await asyncio.sleep(0.2)


@dataclass
class Entry:
    id: str
    name: str
    image: Image.Image  # RGB, fully decoded
    stamp: tuple[int, ...] = ()  # served files: (device, inode, size, mtime) of the file decoded

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.image.width, "height": self.image.height}


def servable_name(name: str) -> bool:
    """A plain, visible file name with an image suffix: one path component, nothing to resolve."""
    return (0 < len(name) <= 255 and "/" not in name and "\\" not in name and "\0" not in name
            and not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES)


class Library:
    """Images the viewer may open: regular files directly in ``folder`` (links are not followed)
    and uploads. The folder is opened once; files are opened relative to it."""

    def __init__(self, folder: Path | None, limits: Limits) -> None:
        self.folder = folder.resolve() if folder is not None else None
        self.dir_fd: int | None = None
        if self.folder is not None:
            self.dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            weakref.finalize(self, os.close, self.dir_fd)
        self.limits = limits
        self.uploads: OrderedDict[str, Entry] = OrderedDict()
        self.decoded: OrderedDict[str, Entry] = OrderedDict()
        self.lock = threading.Lock()

    def served_names(self) -> list[str]:
        if self.dir_fd is None:
            return []
        with os.scandir(self.dir_fd) as entries:
            return sorted(e.name for e in entries if servable_name(e.name) and e.is_file(follow_symlinks=False))

    def open(self, name: str) -> tuple[BinaryIO, os.stat_result]:
        """Open ``name`` once (O_NOFOLLOW, relative to the folder's descriptor, so no link is
        followed and nothing can be swapped between a check and the read), then check on that
        descriptor that it is a regular file within the size limit; 404 or 413 otherwise."""
        if self.dir_fd is None or not servable_name(name):
            raise HTTPException(404, "no such image")
        try:  # O_NONBLOCK: a FIFO under an image name must not hang the open
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.dir_fd)
        except OSError:
            raise HTTPException(404, "no such image") from None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise HTTPException(404, "no such image")
            if st.st_size > self.limits.served_bytes:
                raise HTTPException(413, f"{name} is larger than {self.limits.served_bytes:,} bytes")
        except BaseException:
            f.close()
            raise
        return f, st

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for name in self.served_names():
            try:
                f, _ = self.open(name)
                with f, Image.open(f) as im:  # reads the header only
                    w, h = im.size
            except (HTTPException, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning):
                continue  # gone, not an image, or far too large
            out.append({"id": f"f:{name}", "name": name, "width": w, "height": h})
        return out

    def get(self, image_id: str) -> Entry:
        """The decoded image (blocking: call it off the event loop)."""
        with self.lock:
            if image_id in self.uploads:
                return self.uploads[image_id]
        if not image_id.startswith("f:"):
            raise HTTPException(404, "no such image")
        name = image_id[2:]
        f, st = self.open(name)
        with f:
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with self.lock:
                cached = self.decoded.get(image_id)
                if cached is not None and cached.stamp == stamp:
                    self.decoded.move_to_end(image_id)
                    return cached
            data = f.read(self.limits.served_bytes + 1)
        if len(data) > self.limits.served_bytes:
            raise HTTPException(413, f"{name} is larger than {self.limits.served_bytes:,} bytes")
        entry = Entry(image_id, name, decode_image(data, self.limits), stamp)
        with self.lock:
            self.decoded[image_id] = entry
            while len(self.decoded) > 4:
                self.decoded.popitem(last=False)
        return entry

    def add_upload(self, name: str, data: bytes) -> Entry:
        entry = Entry(f"u:{secrets.token_hex(8)}", Path(name or "upload").name[:100], decode_image(data, self.limits))
        with self.lock:
            self.uploads[entry.id] = entry
            while len(self.uploads) > self.limits.uploads_kept:
                self.uploads.popitem(last=False)
        return entry


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Bytes -> RGB image, upright per its EXIF orientation, refusing non-images (415) and too many
    pixels (413, from the header, before decoding; Pillow's own decompression-bomb refusal also
    answers 413)."""
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        if im.format not in FORMATS:
            raise HTTPException(415, f"unsupported image format {im.format}; use PNG, JPEG, WebP or BMP")
        if im.width * im.height > limits.input_pixels:
            raise HTTPException(413, f"image has {im.width}x{im.height} pixels; the limit is "
                                     f"{limits.input_pixels:,} pixels")
        im.load()
        with warnings.catch_warnings():  # an animated upload shows its first frame, as the CLI does
            warnings.simplefilter("ignore", imaging.MultiFrameInput)
            im = imaging.prepare(im)  # EXIF orientation: the image as the user sees it
    except HTTPException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(413, f"image has more than the {limits.input_pixels:,} pixels allowed") from None
    except UnidentifiedImageError:
        raise HTTPException(415, "not an image (PNG, JPEG, WebP or BMP expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise HTTPException(415, f"cannot decode the image: {e}") from None
    return im.convert("RGB")


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def bicubic_window(im: Image.Image, out_hw: tuple[int, int], region: tuple[int, int, int, int]) -> Image.Image:
    """The window (x, y, w, h) of Pillow's bicubic resize of ``im`` to ``out_hw``, computed alone."""
    H, W = out_hw
    x, y, w, h = region
    sx, sy = im.width / W, im.height / H
    return im.resize((w, h), Image.Resampling.BICUBIC, box=(x * sx, y * sy, (x + w) * sx, (y + h) * sy))


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: request bodies on ``paths`` above ``limit`` bytes get 413, whether the size
    is announced (Content-Length) or only found while streaming."""

    def __init__(self, app: Any, limit: int, paths: tuple[str, ...]) -> None:
        self.app, self.limit, self.paths = app, limit, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = JSONResponse({"detail": f"upload larger than {self.limit:,} bytes"}, status_code=413)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_large(scope, receive, send)
            return
        seen, exceeded = 0, False

        async def limited() -> Message:
            nonlocal seen, exceeded
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise _TooLarge
            return msg

        async def unless_exceeded(msg: Message) -> None:
            if not exceeded:  # the app's own answer to the cut-off body (FastAPI says 400) is dropped
                await send(msg)

        try:
            await self.app(scope, limited, unless_exceeded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await too_large(scope, receive, send)


_NETLOC = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(netloc: str) -> str | None:
    """``name[:port]`` or ``[v6]:port`` -> the lowercase name without brackets; None if malformed."""
    m = _NETLOC.fullmatch(netloc)
    return m.group(1).strip("[]").lower() if m else None


def allowed_hosts(bind: str = "127.0.0.1", extra: Iterable[str] = ()) -> list[str]:
    """Host names the server answers to: this machine's names, the bind address (unless it is a
    wildcard such as 0.0.0.0) and ``extra`` (``--allow-host``; ``*`` allows any)."""
    names = [*LOCAL_HOSTS, *([] if bind in WILDCARD_BINDS else [bind]), *extra]
    return list(dict.fromkeys(n.strip("[]").lower() for n in names))


class Guard:
    """ASGI middleware against DNS rebinding and cross-site use: the Host header must name an
    allowed host (else 400), a state-changing request (POST...) from another origin gets 403, and
    every answer carries :data:`SECURITY_HEADERS`."""

    def __init__(self, app: Any, hosts: Iterable[str]) -> None:
        self.app, self.hosts = app, set(hosts)

    def allowed(self, name: str | None) -> bool:
        return name is not None and ("*" in self.hosts or name in self.hosts)

    def refusal(self, method: str, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.allowed(host_name(host)):
            return 400, f"unknown host {host[:100]!r}; start the server with --allow-host NAME to use this name"
        if method in SAFE_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None:
            parts = urlsplit(origin.decode("latin-1"))
            if parts.scheme not in ("http", "https") or not self.allowed(host_name(parts.netloc)):
                return 403, "cross-origin request refused"
        if headers.get(b"sec-fetch-site", b"same-origin") not in (b"same-origin", b"none"):
            return 403, "cross-site request refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *SECURITY_HEADERS]}
            await send(msg)

        refused = self.refusal(scope["method"], dict(scope.get("headers") or []))
        if refused is not None:
            await JSONResponse({"detail": refused[1]}, status_code=refused[0])(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


def create_app(upscaler: Upscaler, images: Path | None = None, limits: Limits | None = None,
               title: str = "liif viewer", hosts: Iterable[str] | None = None) -> FastAPI:
    """The viewer app around a loaded :class:`~liif.api.Upscaler`. ``hosts``: the names the
    Host header may carry (default :func:`allowed_hosts`: localhost, 127.0.0.1, ::1)."""
    limits = limits or Limits()
    library = Library(images, limits)
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=limits.upload_bytes, paths=("/api/upload",))
    app.add_middleware(Guard, hosts=allowed_hosts() if hosts is None else hosts)  # outermost: sees every answer
    app.state.limits, app.state.library = limits, library
    app.state.gate = None  # made on the server's event loop at first use (asyncio objects are per loop)
    app.state.closing = False

    def gate() -> RenderGate:
        loop = asyncio.get_running_loop()
        if app.state.gate is None or app.state.gate.loop is not loop:
            app.state.gate = RenderGate(limits.workers, limits.queue, limits.request_seconds)
            if app.state.closing:
                app.state.gate.close()
        return app.state.gate

    def stop_renders() -> None:
        """Shutting down: refuse new renders, stop running ones (safe in a signal handler)."""
        app.state.closing = True
        if app.state.gate is not None:
            app.state.gate.close()

    app.state.get_gate, app.state.stop_renders = gate, stop_renders

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {"limits": asdict(limits), "zoom": [1, 30]}

    @app.get("/api/images")
    def list_images() -> list[dict[str, Any]]:
        return library.listing()

    @app.get("/api/source")
    def source(image: str = Query(max_length=200)) -> Response:
        return Response(png_bytes(library.get(image).image), media_type="image/png")

    @app.post("/api/upload")
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:
        if (file.content_type or "") not in UPLOAD_TYPES:
            raise HTTPException(415, f"unsupported upload type {file.content_type}; use PNG, JPEG, WebP or BMP")
        data = await file.read(limits.upload_bytes + 1)
        if len(data) > limits.upload_bytes:
            raise HTTPException(413, f"upload larger than {limits.upload_bytes:,} bytes")
        entry = await run_in_threadpool(library.add_upload, file.filename or "upload", data)
        return entry.info()

    def check_size(entry: Entry, W: int, H: int) -> None:
        for n_out, n_in, axis in ((W, entry.image.width, "width"), (H, entry.image.height, "height")):
            if n_out > limits.max_scale * n_in:
                raise HTTPException(422, f"output {axis} {n_out} is over {limits.max_scale:g}x the input's {n_in}")

    @app.get("/api/render")
    async def render(request: Request, image: str = Query(max_length=200),
                     W: int = Query(ge=1, le=MAX_SIDE), H: int = Query(ge=1, le=MAX_SIDE),
                     x: int = Query(0, ge=0, le=MAX_SIDE), y: int = Query(0, ge=0, le=MAX_SIDE),
                     w: int = Query(ge=1, le=MAX_SIDE), h: int = Query(ge=1, le=MAX_SIDE),
                     method: str = Query("liif", pattern="^(liif|bicubic)$")) -> Response:
        """PNG of the window (x, y, w, h) of the image rendered at W x H."""
        entry = await run_in_threadpool(library.get, image)
        check_size(entry, W, H)
        if x + w > W or y + h > H:
            raise HTTPException(422, f"window x={x} y={y} w={w} h={h} lies outside the {W}x{H} output")
        if w * h > limits.view_pixels:
            raise HTTPException(422, f"window of {w * h:,} pixels is over the {limits.view_pixels:,} per request")
        if method == "bicubic":  # cheap per pixel but not free: it queues like any render
            data = await gate().run(request, lambda stop: png_bytes(bicubic_window(entry.image, (H, W),
                                                                                   (x, y, w, h))))
        else:
            data = await gate().run(request, lambda stop: png_bytes(upscaler.upscale(
                entry.image, size=(H, W), region=(x, y, w, h), cancel=stop)))
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/download")
    async def download(request: Request, image: str = Query(max_length=200),
                       W: int = Query(ge=1, le=MAX_SIDE), H: int = Query(ge=1, le=MAX_SIDE)) -> Response:
        """The whole image rendered at W x H, as an attachment."""
        entry = await run_in_threadpool(library.get, image)
        check_size(entry, W, H)
        if W * H > limits.download_pixels:
            raise HTTPException(422, f"{W}x{H} is over the {limits.download_pixels:,} pixels allowed per download")
        data = await gate().run(request, lambda stop: png_bytes(upscaler.upscale(entry.image, size=(H, W),
                                                                                  cancel=stop)))
        stem = Path(entry.name).stem.replace('"', "")[:80] or "image"
        return Response(data, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="{stem}-liif-{W}x{H}.png"'})

    return app


__all__ = ["Guard", "Limits", "RenderGate", "allowed_hosts", "bicubic_window", "create_app", "decode_image"]
