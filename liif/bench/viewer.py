"""``liif bench viewer``: how fast the real viewer page becomes sharp, driven in headless Chromium.

For each ``--weights`` a server (``liif serve``'s app, in this process) serves one 480x320 test
card; Chromium (1280x800 by default, device scale factor 1) opens the page and the times come from
the page's own marks (``performance.now()`` when the view changed, when its coarse preview was
complete, when every visible pixel was the model's: ``dataset.sharp`` turned "1"):

- warm-up: from creating the server to the end of its idle-time warming of the first image
  (``liif.serve.warm``: the whole image's features and maps), which a user's server does while the
  browser opens;
- cold open: a fresh page with no deep link (the first image, fitted), on the warmed server;
- deep link x4: a fresh page on ``#image=...&zoom=4`` at the image centre;
- pan: a drag of 120 source pixels after that view (and its prefetch ring) was done;
- zoom step: the + button (x1.25);
- each "coarse" column: when the view's coarse preview was complete (models with a coarse pass: LIIF's
  and LTE's tiles at 1/4 of the resolution, decoded without the local ensemble); at once when the
  page's kept coarse tiles already cover the new view;
- deep link x4, empty: the same link after the server's cache was emptied (the encoder runs for the
  view first; the warmer fills the rest once the renderer is idle);
- the same window of the deep link rendered by the API pipeline the CLI runs (in process, after
  loading: no start-up) and by a ``liif upscale --region`` process (wall time, start-up included);
  the ratios are sharp time / in-process time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from liif.bench.chrome import Chromium, Page, find_chromium
from liif.errors import LiifError
from liif.fileio import write_text_atomic

IMAGE = "card.png"
PAN = 120  # source pixels
ZOOM = 4.0


def bench_image(size: tuple[int, int]) -> Image.Image:
    """The demo's test card, cropped to ``size`` (width, height)."""
    from liif.demo import test_card

    side = max(size)
    card = test_card(side)
    x0, y0 = (side - size[0]) // 2, (side - size[1]) // 2
    return card.crop((x0, y0, x0 + size[0], y0 + size[1]))


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on a free 127.0.0.1 port (uvicorn in a thread); yields the base URL."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise LiifError("the viewer's server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


MARKS = "(() => { const s = window.liifViewer.state(); return document.documentElement.dataset.sharp === '1' " \
        "&& s.marks.sharp !== null ? {...s.marks, geometry: s.geometry, zoom: s.zoom} : null; })()"
IDLE = "(() => { const r = window.liifViewer.state().requests; return r.flight === 0 && r.queued === 0; })()"


def open_url(page: Page, url: str, timeout: float) -> dict[str, Any]:
    page.send("Page.navigate", {"url": "about:blank"})
    page.send("Page.navigate", {"url": url})
    page.wait_for("window.liifViewer && window.liifViewer.ready", timeout=timeout)
    return dict(page.wait_for(MARKS, timeout=timeout))


def settle(page: Page, app: Any, timeout: float) -> None:
    """Wait until the page asks nothing more (its prefetch ring done) and the server renders nothing."""
    page.wait_for(IDLE, timeout=timeout)
    deadline = time.monotonic() + timeout
    while app.state.gate is not None and app.state.gate.running and time.monotonic() < deadline:
        time.sleep(0.05)


def after(page: Page, action: Any, timeout: float) -> dict[str, Any]:
    """Do ``action()``, then wait for the new view to be sharp; its marks."""
    action()
    page.wait_for("document.documentElement.dataset.sharp === '0'", timeout=timeout)
    return dict(page.wait_for(MARKS, timeout=timeout))


def drag(page: Page, dx: float) -> None:
    box = page.eval("(() => { const r = document.getElementById('view').getBoundingClientRect();"
                    " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    x, y = box
    page.mouse("mousePressed", x, y, button="left", clickCount=1)
    for k in range(1, 9):
        page.mouse("mouseMoved", x + dx * k / 8, y, button="left")
        time.sleep(0.01)
    page.mouse("mouseReleased", x + dx, y, button="left", clickCount=1)


def since(marks: dict[str, Any], key: str, start: float | None = None) -> float | None:
    v = marks.get(key)
    return None if v is None else (v - (marks["changed"] if start is None else start)) / 1000


def measure(weights: str, precision: str, folder: Path, window: tuple[int, int], chromium: str,
            timeout: float) -> dict[str, Any]:
    from liif import api
    from liif.serve.app import create_app

    up = api.load(weights, device="cpu", precision=precision)
    t0 = time.perf_counter()
    app = create_app(up, folder)
    out: dict[str, Any] = {"weights": weights, "method": up.spec.method, "precision": up.precision}
    warmer = app.state.warmer
    with serving(app) as base, tempfile.TemporaryDirectory() as tmp:
        if not warmer.wait_idle(timeout):
            raise LiifError("the server did not finish warming its first image")
        out["warm_up_s"] = time.perf_counter() - t0  # start-up to the first image's features and maps
        browser = Chromium(chromium, Path(tmp) / "profile", window, Path(tmp) / "chromium.log")
        try:
            page = Page(browser, window)
            m = open_url(page, base + "/", timeout)
            out["cold_open_s"] = since(m, "sharp", 0.0)
            out["fit_zoom"] = m["zoom"]
            settle(page, app, timeout)
            w, h = Image.open(folder / IMAGE).size
            link = f"{base}/#image={IMAGE}&zoom={ZOOM:g}&x={w / 2:g}&y={h / 2:g}"
            m = open_url(page, link, timeout)  # a fresh page (no tiles) on a server that has warmed the image
            out["deep_link_s"] = since(m, "sharp", 0.0)
            out["deep_link_coarse_s"] = since(m, "coarse", 0.0)
            g = m["geometry"]
            out["window"] = {"W": g["W"], "H": g["H"], "x": g["x"], "y": g["y"], "w": g["w"], "h": g["h"]}
            settle(page, app, timeout)
            m = after(page, lambda: drag(page, -PAN * ZOOM), timeout)
            out["pan_s"] = since(m, "sharp")
            out["pan_coarse_s"] = since(m, "coarse")
            settle(page, app, timeout)
            m = after(page, lambda: page.click("#zoom-in"), timeout)
            out["zoom_step_s"] = since(m, "sharp")
            out["zoom_step_coarse_s"] = since(m, "coarse")
            settle(page, app, timeout)
            warmer.wait_idle(timeout)
            app.state.windows.cache.clear()  # nothing of the image on the server: the encoder runs for the view
            m = open_url(page, link, timeout)
            out["deep_link_empty_s"] = since(m, "sharp", 0.0)
            out["deep_link_empty_coarse_s"] = since(m, "coarse", 0.0)
        finally:
            browser.close()
            warmer.stop()
    out["api_window_s"], out["cli_window_s"] = window_times(up, weights, precision, folder / IMAGE, out["window"])
    out["sharp_over_api"] = out["deep_link_s"] / out["api_window_s"]
    out["empty_over_api"] = out["deep_link_empty_s"] / out["api_window_s"]
    return out


def window_times(up: Any, weights: str, precision: str, image: Path, win: dict[str, int]) -> tuple[float, float]:
    """Seconds to render the window in process (a fresh pipeline, as one CLI call builds) and by a
    ``liif upscale --region`` process (start-up and model loading included)."""
    src = Image.open(image).convert("RGB")
    t = time.perf_counter()
    up.upscale(src, size=(win["H"], win["W"]), region=(win["x"], win["y"], win["w"], win["h"]))
    api_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "liif.cli", "upscale", str(image), "-o", str(Path(tmp) / "out.png"),
               "--size", f"{win['W']}x{win['H']}", "--region", f"{win['x']},{win['y']},{win['w']},{win['h']}",
               "--weights", weights, "--precision", precision, "--device", "cpu", "--no-progress"]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        cli_s = time.perf_counter() - t
        if done.returncode != 0:
            raise LiifError(f"liif upscale failed: {done.stderr.strip().splitlines()[-1:]}")
    return api_s, cli_s


def cpu_class() -> str:
    isa = torch.backends.cpu.get_cpu_capability()
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{isa}, oneDNN bf16 {bf16}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs{load}"


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def report(rows: list[dict[str, Any]]) -> str:
    cols = [("warm-up", "warm_up_s"), ("cold open", "cold_open_s"), ("x4 link", "deep_link_s"),
            ("x4 coarse", "deep_link_coarse_s"), ("pan 120", "pan_s"), ("pan coarse", "pan_coarse_s"),
            ("zoom step", "zoom_step_s"),
            ("zoom coarse", "zoom_step_coarse_s"), ("link, empty", "deep_link_empty_s"),
            ("its coarse", "deep_link_empty_coarse_s"), ("window API", "api_window_s"),
            ("window CLI", "cli_window_s"), ("sharp/API", "sharp_over_api"), ("empty/API", "empty_over_api")]
    lines = [f"{'model':<10} {'prec':<5} " + " ".join(f"{name:>{max(9, len(name))}}" for name, _ in cols)]
    for r in rows:
        lines.append(f"{r['method']:<10} {r['precision']:<5} "
                     + " ".join(f"{fmt(r.get(key)):>{max(9, len(name))}}" for name, key in cols))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    chromium = find_chromium()
    if chromium is None:
        raise LiifError("liif bench viewer needs Chromium (apt-get install chromium, or set LIIF_CHROMIUM)")
    try:
        width, height = (int(v) for v in args.image_size.lower().split("x"))
        win_w, win_h = (int(v) for v in args.window.lower().split("x"))
    except ValueError:
        raise LiifError("--image-size and --window must be WIDTHxHEIGHT") from None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_image((width, height)).save(folder / IMAGE)
        for w in args.weights or ["edsr-baseline-liif"]:
            print(f"liif bench viewer: {w} ...", file=sys.stderr)
            rows.append(measure(w, args.precision, folder, (win_w, win_h), chromium, args.timeout))
    print(f"CPU: {cpu_class()}; image {width}x{height}, Chromium window {win_w}x{win_h}; seconds")
    print(report(rows))
    if args.json:
        write_text_atomic(args.json, json.dumps({"cpu": cpu_class(), "rows": rows}, indent=1) + "\n")
    return 0
