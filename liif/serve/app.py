"""The viewer's web server (FastAPI): served/uploaded images, window renders, downloads.

The page asks for exactly the pixels it shows: ``/api/render`` takes the virtual output size
(W, H) at screen resolution and the visible window (x, y, w, h) of it, and answers a PNG of that
window rendered with region rendering (the same pixels as the crop of the full render). Every
render goes through :class:`RenderGate`: a few run at once, a few wait, the rest get 503 at once.

Limits (see :class:`Limits`): bytes and pixels of uploads, pixels per view and per download,
scale per axis. Only files directly inside the ``images`` folder are readable (by name, from the
listing; anything else is 404); uploads are decoded and kept in memory (a bounded number), never
added to the folder.
"""
from __future__ import annotations

import asyncio
import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError

from liif.api import Upscaler

STATIC = Path(__file__).parent / "static"
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
FORMATS = {"PNG", "JPEG", "WEBP", "BMP"}
UPLOAD_TYPES = {"image/png", "image/jpeg", "image/webp", "image/bmp", "application/octet-stream", ""}
MAX_SIDE = 1 << 20  # sanity bound on any size parameter before the real limits apply


@dataclass(frozen=True)
class Limits:
    upload_bytes: int = 20 << 20
    input_pixels: int = 12_000_000  # decoded pixels of an uploaded or served image
    view_pixels: int = 4_200_000  # one /api/render window: a 2560x1600 screen
    download_pixels: int = 16_800_000  # one /api/download: 4K UHD x 2
    max_scale: float = 64.0  # output/input per axis: x30 zoom at device pixel ratio 2, with margin
    workers: int = 1  # renders running at once
    queue: int = 4  # renders waiting; beyond that 503
    uploads_kept: int = 16  # uploaded images kept in memory, oldest dropped


class RenderGate:
    """At most ``workers`` renders run (in a thread pool), at most ``queue`` wait; ``admit`` refuses
    the rest at once. Counters live on the event loop, so no lock is needed."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.queue = workers, queue
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liif-render")
        self.slots = asyncio.Semaphore(workers)
        self.loop = asyncio.get_running_loop()
        self.admitted = self.running = 0
        self.peak_admitted = self.peak_running = 0
        self.refused = 0

    async def run(self, request: Request, fn: Callable[[], bytes]) -> bytes:
        if self.admitted >= self.workers + self.queue:
            self.refused += 1
            raise HTTPException(503, "the renderer is busy; retry shortly", headers={"Retry-After": "1"})
        self.admitted += 1
        self.peak_admitted = max(self.peak_admitted, self.admitted)
        try:
            async with self.slots:
                if await request.is_disconnected():  # the page moved on while this waited
                    raise HTTPException(499, "client went away")
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
                try:
                    return await asyncio.get_running_loop().run_in_executor(self.pool, fn)
                finally:
                    self.running -= 1
        finally:
            self.admitted -= 1


@dataclass
class Entry:
    id: str
    name: str
    image: Image.Image  # RGB, fully decoded

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.image.width, "height": self.image.height}


class Library:
    """Images the viewer may open: files directly in ``folder`` (by exact listed name) and uploads."""

    def __init__(self, folder: Path | None, limits: Limits) -> None:
        self.folder = folder.resolve() if folder is not None else None
        self.limits = limits
        self.uploads: OrderedDict[str, Entry] = OrderedDict()
        self.decoded: OrderedDict[str, Entry] = OrderedDict()
        self.lock = threading.Lock()

    def served_names(self) -> list[str]:
        if self.folder is None:
            return []
        names = []
        for p in sorted(self.folder.iterdir()):
            if p.name.startswith(".") or p.suffix.lower() not in SUFFIXES or not p.is_file():
                continue
            if not p.resolve().is_relative_to(self.folder):  # a link pointing out of the folder
                continue
            names.append(p.name)
        return names

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for name in self.served_names():
            try:
                with Image.open(self.folder / name) as im:  # type: ignore[operator]
                    w, h = im.size
            except (OSError, UnidentifiedImageError):
                continue
            out.append({"id": f"f:{name}", "name": name, "width": w, "height": h})
        return out

    def get(self, image_id: str) -> Entry:
        with self.lock:
            if image_id in self.uploads:
                return self.uploads[image_id]
            if image_id in self.decoded:
                self.decoded.move_to_end(image_id)
                return self.decoded[image_id]
        if not image_id.startswith("f:") or image_id[2:] not in self.served_names():
            raise HTTPException(404, "no such image")
        path = self.folder / image_id[2:]  # type: ignore[operator]
        entry = Entry(image_id, path.name, decode_image(path.read_bytes(), self.limits))
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
    """Bytes -> RGB image, refusing non-images (415) and too many pixels (413) before decoding."""
    try:
        im = Image.open(io.BytesIO(data))
        if im.format not in FORMATS:
            raise HTTPException(415, f"unsupported image format {im.format}; use PNG, JPEG, WebP or BMP")
        if im.width * im.height > limits.input_pixels:
            raise HTTPException(413, f"image has {im.width}x{im.height} pixels; the limit is "
                                     f"{limits.input_pixels:,} pixels")
        im.load()
    except HTTPException:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
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

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
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

        async def limited() -> dict[str, Any]:
            nonlocal seen, exceeded
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise _TooLarge
            return msg

        async def unless_exceeded(msg: dict[str, Any]) -> None:
            if not exceeded:  # the app's own answer to the cut-off body (FastAPI says 400) is dropped
                await send(msg)

        try:
            await self.app(scope, limited, unless_exceeded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await too_large(scope, receive, send)


def create_app(upscaler: Upscaler, images: Path | None = None, limits: Limits | None = None,
               title: str = "liif viewer") -> FastAPI:
    """The viewer app around a loaded :class:`~liif.api.Upscaler`."""
    limits = limits or Limits()
    library = Library(images, limits)
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=limits.upload_bytes, paths=("/api/upload",))
    app.state.limits, app.state.library = limits, library
    app.state.gate = None  # made on the server's event loop at first use (asyncio objects are per loop)

    def gate() -> RenderGate:
        loop = asyncio.get_running_loop()
        if app.state.gate is None or app.state.gate.loop is not loop:
            app.state.gate = RenderGate(limits.workers, limits.queue)
        return app.state.gate

    app.state.get_gate = gate

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
        return library.add_upload(file.filename or "upload", data).info()

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
        entry = library.get(image)
        check_size(entry, W, H)
        if x + w > W or y + h > H:
            raise HTTPException(422, f"window x={x} y={y} w={w} h={h} lies outside the {W}x{H} output")
        if w * h > limits.view_pixels:
            raise HTTPException(422, f"window of {w * h:,} pixels is over the {limits.view_pixels:,} per request")
        if method == "bicubic":
            return Response(png_bytes(bicubic_window(entry.image, (H, W), (x, y, w, h))), media_type="image/png")
        data = await gate().run(request, lambda: png_bytes(upscaler.upscale(entry.image, size=(H, W),
                                                                             region=(x, y, w, h))))
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/download")
    async def download(request: Request, image: str = Query(max_length=200),
                       W: int = Query(ge=1, le=MAX_SIDE), H: int = Query(ge=1, le=MAX_SIDE)) -> Response:
        """The whole image rendered at W x H, as an attachment."""
        entry = library.get(image)
        check_size(entry, W, H)
        if W * H > limits.download_pixels:
            raise HTTPException(422, f"{W}x{H} is over the {limits.download_pixels:,} pixels allowed per download")
        data = await gate().run(request, lambda: png_bytes(upscaler.upscale(entry.image, size=(H, W))))
        stem = Path(entry.name).stem.replace('"', "")[:80] or "image"
        return Response(data, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="{stem}-liif-{W}x{H}.png"'})

    return app


__all__ = ["Limits", "RenderGate", "bicubic_window", "create_app", "decode_image"]
