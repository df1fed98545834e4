"""The viewer's web server (FastAPI): the page, served/uploaded images, window renders, downloads.

The page asks for exactly the pixels it shows: ``/api/render`` takes the virtual output size
(W, H) at screen resolution and the visible window (x, y, w, h) of it, and answers a PNG of that
window rendered with region rendering (the same pixels as the crop of the full render). Every
render goes through the :class:`~liif.serve.gate.RenderGate`, every decode (uploads, the first
opening of a served file, source PNGs) through the :class:`~liif.serve.decodes.DecodeGate`; images
come from the :class:`~liif.serve.library.Library`; :mod:`liif.serve.security` guards every request,
and :class:`~liif.serve.limits.Limits` bounds them.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from liif.api import Upscaler
from liif.render.mapcache import MapCache, torch_threads
from liif.serve.access import AccessLog
from liif.serve.decodes import DecodeGate
from liif.serve.gate import RenderGate
from liif.serve.images import attachment, bicubic_window, png_bytes
from liif.serve.library import Entry, Library
from liif.serve.limits import Limits, resolve_workers
from liif.serve.security import BodyLimit, Guard, allowed_hosts
from liif.serve.warm import Warmer

STATIC = Path(__file__).parent / "static"
UPLOAD_TYPES = {"image/png", "image/jpeg", "image/webp", "image/bmp", "application/octet-stream", ""}
MAX_SIDE = 1 << 20  # sanity bound on any size parameter before the real limits apply
WARM_AT_START = 8  # folder images the server warms when it starts (while they fit the cache)


def create_app(upscaler: Upscaler, images: Path | None = None, limits: Limits | None = None,
               title: str = "liif viewer", hosts: Iterable[str] | None = None) -> FastAPI:
    """The viewer app around a loaded :class:`~liif.api.Upscaler`. ``hosts``: the names the
    Host header may carry (default :func:`allowed_hosts`: localhost, 127.0.0.1, ::1)."""
    limits = limits or Limits()
    library = Library(images, limits)
    # one pipeline for every window: its backend built once, its cache kept across requests
    cores = torch.get_num_threads()
    cache = MapCache(limits.cache_bytes, cores) if limits.cache_bytes > 0 else None
    windows = upscaler.pipeline(cache=cache)
    # LMF's decode is many small elementwise steps: with two threads on a busy CPU each step waits
    # for a descheduled thread (measured: 4 s a tile instead of 0.13 s with one). GEMM decodes
    # (LIIF, LTE) keep every thread; the encoder always does (``MapCache.fill_threads``).
    decode_threads = None if upscaler.model.has_tail else 1
    limits = resolve_workers(limits, decode_threads == 1, cores)  # LMF: tiles decode side by side instead
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=limits.upload_bytes, paths=("/api/upload",))
    app.add_middleware(Guard, hosts=allowed_hosts() if hosts is None else hosts)  # sees every answer
    app.add_middleware(AccessLog)  # outermost: logs every request, refused ones included
    app.state.limits, app.state.library, app.state.windows = limits, library, windows
    # A coarse pass first pays where the decode costs much per output pixel: not for LMF, whose
    # decode is cheap and whose maps depend on the cell (a coarse level would need its own).
    coarse = 1 if upscaler.model.maps_see_cell else 4
    app.state.gate = app.state.decodes = None  # made on the server's event loop at first use (per loop)
    app.state.closing = False
    # idle-time warming of the images the page shows (liif.serve.warm): renders only decode afterwards
    warmer = None if cache is None else Warmer(
        busy=lambda: app.state.gate is not None and app.state.gate.admitted > 0)
    app.state.warmer = warmer

    def warm(entry: Entry) -> None:
        if warmer is not None:
            key = (entry.id, entry.stamp)
            warmer.add(key, lambda cancel: windows.warm(entry.image, key, cancel))

    def warm_served(image_id: str) -> Callable[[Callable[[], bool]], object]:
        """A start-up job: a folder image, only where it fits beside what the cache holds."""
        return lambda cancel: windows.warm((e := library.get(image_id)).image, (e.id, e.stamp), cancel, evict=False)

    if warmer is not None and library.folder is not None:
        # the folder's first images, in name order (the first is what the page opens when its URL names
        # none), so that deep links into the folder find their features
        for name in reversed(library.served_names()[:WARM_AT_START]):  # names only: no file is opened here
            warmer.add(("start", f"f:{name}"), warm_served(f"f:{name}"))

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
        if warmer is not None:
            warmer.stop()

    def decodes() -> DecodeGate:
        loop = asyncio.get_running_loop()
        if app.state.decodes is None or app.state.decodes.loop is not loop:
            app.state.decodes = DecodeGate(limits.decoders, limits.decode_queue)
        return app.state.decodes

    async def lookup(image_id: str) -> Entry:
        """The decoded image: at hand, or decoded once through the decode gate however many
        requests ask for it at the same time."""
        found = await run_in_threadpool(library.cached, image_id)
        if isinstance(found, Entry):
            return found
        return await decodes().run(lambda: library.load(image_id), key=(image_id, found))

    app.state.get_gate, app.state.stop_renders = gate, stop_renders

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    async def config() -> dict[str, Any]:  # on the event loop: answers whatever the thread pools do
        return {"limits": asdict(limits), "zoom": [1, 30], "coarse": coarse}

    @app.get("/api/images")
    def list_images() -> list[dict[str, Any]]:
        return library.listing()

    @app.get("/api/source")
    async def source(image: str = Query(max_length=200)) -> Response:
        entry = await lookup(image)
        warm(entry)  # the page shows this image next: its features are computed while the page loads
        data = await decodes().run(lambda: png_bytes(entry.image), key=("png", entry.id, entry.stamp))
        return Response(data, media_type="image/png")

    @app.post("/api/upload")
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:
        if (file.content_type or "") not in UPLOAD_TYPES:
            raise HTTPException(415, f"unsupported upload type {file.content_type}; use PNG, JPEG, WebP or BMP")
        # read and decoded in the decode gate's threads: a waiting upload holds only its spooled body
        entry = await decodes().run(lambda: library.add_upload(file.filename or "upload", file.file))
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
                     kind: str = Query("liif", alias="method", pattern="^(liif|preview|bicubic)$"),
                     view: str | None = Query(None, max_length=60, pattern=r"^\d+,\d+,\d+,\d+$")) -> Response:
        """PNG of the window (x, y, w, h) of the image rendered at W x H; ``kind`` (query ``method``):
        LIIF, its preview (each pixel from its nearest code, without the local ensemble: the page's coarse
        pass, a quarter of the decode) or the bicubic resize shown beside it. ``view`` ("x,y,w,h"): the
        page's visible window around this tile, whose features and maps the server computes first, in one
        piece, and keeps."""
        entry = await lookup(image)
        check_size(entry, W, H)
        hint = None if view is None else tuple(int(v) for v in view.split(","))
        for name, (wx, wy, ww, wh) in (("window", (x, y, w, h)), ("view", hint or (0, 0, 1, 1))):
            if wx + ww > W or wy + wh > H or ww < 1 or wh < 1:
                raise HTTPException(422, f"{name} x={wx} y={wy} w={ww} h={wh} lies outside the {W}x{H} output")
            if ww * wh > limits.view_pixels:
                raise HTTPException(422, f"{name} of {ww * wh:,} pixels is over the {limits.view_pixels:,} "
                                         "per request")
        if kind == "bicubic":  # cheap per pixel but not free: it queues like any render
            data = await gate().run(request, lambda stop: png_bytes(bicubic_window(entry.image, (H, W),
                                                                                   (x, y, w, h))))
        else:
            warm(entry)  # the rest of the image, once the renderer is idle
            def window(stop: Callable[[], bool]) -> bytes:
                with torch_threads(decode_threads):
                    return png_bytes(windows.image(  # type: ignore[arg-type]
                        entry.image, size=(H, W), region=(x, y, w, h), cancel=stop, key=(entry.id, entry.stamp),
                        hint=hint, preview=kind == "preview"))
            data = await gate().run(request, window)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/download")
    async def download(request: Request, image: str = Query(max_length=200),
                       W: int = Query(ge=1, le=MAX_SIDE), H: int = Query(ge=1, le=MAX_SIDE)) -> Response:
        """The whole image rendered at W x H, as an attachment."""
        entry = await lookup(image)
        check_size(entry, W, H)
        if W * H > limits.download_pixels:
            raise HTTPException(422, f"{W}x{H} is over the {limits.download_pixels:,} pixels allowed per download")
        disposition = attachment(f"{Path(entry.name).stem[:80] or 'image'}-liif-{W}x{H}.png")  # before the render
        data = await gate().run(request, lambda stop: png_bytes(upscaler.upscale(entry.image, size=(H, W),
                                                                                  cancel=stop)))
        return Response(data, media_type="image/png", headers={"Content-Disposition": disposition})

    return app


__all__ = ["create_app"]
