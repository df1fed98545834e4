"""The viewer server: what it renders, what it refuses (with which HTTP code), and that it stays up."""
from __future__ import annotations

import dataclasses
import io
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("fastapi", reason="liif serve needs FastAPI: pip install 'liif[serve]'")
httpx = pytest.importorskip("httpx", reason="the server tests need httpx")
uvicorn = pytest.importorskip("uvicorn", reason="liif serve needs uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import liif.api  # noqa: E402
import liif.serve.security  # noqa: E402
from conftest import GOLDEN, one_error_line, run_cli, serve_in_thread  # noqa: E402
from liif.serve.app import create_app  # noqa: E402
from liif.serve.images import bicubic_window  # noqa: E402
from liif.serve.limits import Limits  # noqa: E402

SMALL = Limits(upload_bytes=200_000, input_pixels=300_000, view_pixels=40_000, download_pixels=100_000,
               workers=1, queue=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A served folder with one image, a text file, a hidden image, and a link leading outside."""
    root = tmp_path_factory.mktemp("serve")
    images = root / "images"
    images.mkdir()
    shutil.copy(GOLDEN / "set5_butterfly_in.png", images / "butterfly.png")
    (images / "notes.txt").write_text("not an image")
    shutil.copy(GOLDEN / "set14_comic_in.png", images / ".hidden.png")
    shutil.copy(GOLDEN / "set14_comic_in.png", root / "secret.png")
    (images / "link.png").symlink_to(root / "secret.png")
    return images


@pytest.fixture(scope="module")
def app(upscaler, folder):
    return create_app(upscaler, folder, SMALL)


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://localhost") as c:  # the default "testserver" is no allowed host
        yield c


def png(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)))


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_page_and_listing(client):
    page = client.get("/")
    assert page.status_code == 200 and "viewer.js" in page.text
    assert client.get("/static/viewer.js").status_code == 200
    listing = client.get("/api/images").json()
    assert listing == [{"id": "f:butterfly.png", "name": "butterfly.png", "width": 57, "height": 64}]


def test_config_names_the_coarse_pass_and_cache(client):
    config = client.get("/api/config").json()
    assert config["coarse"] == 4  # LIIF: a quarter-resolution pass first
    assert config["limits"]["cache_bytes"] == SMALL.cache_bytes >= 256 << 20


def test_every_request_is_logged_once(client, caplog):
    with caplog.at_level("INFO", logger="liif.serve"):
        client.get("/api/images")
        client.get("/api/source", params={"image": "f:missing.png"})
    lines = [r.getMessage() for r in caplog.records if r.name == "liif.serve"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /api/images 200 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET /api/source?image=f%3Amissing.png 404 ")


def test_negative_cache_size_is_one_line_error(capsys):
    rc, out, err = run_cli(["serve", "--cache-mb", "-1", "--port", "1"], capsys)
    assert rc == 1 and out == ""
    assert "--cache-mb >= 0" in one_error_line(err)


@pytest.mark.parametrize("image", ["f:../secret.png", "f:link.png", "f:.hidden.png", "f:notes.txt",
                                   "f:/etc/passwd", "f:images/../butterfly.png", "butterfly.png", "u:0000"])
def test_only_listed_files_are_readable(client, image):
    assert client.get("/api/source", params={"image": image}).status_code == 404
    r = client.get("/api/render", params={"image": image, "W": 100, "H": 100, "w": 10, "h": 10})
    assert r.status_code == 404


@pytest.mark.parametrize("path", ["/static/..%2f..%2f..%2fsecret.png", "/static/../app.py", "/static/%2e%2e/app.py",
                                  "/static/..%2fapp.py"])
def test_static_traversal_refused(client, path):
    assert client.get(path).status_code == 404


def test_preview_window_is_the_coarse_pass(client, upscaler):
    """method=preview: the pipeline's preview render (no local ensemble) of the window, not LIIF's."""
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    W, H, region = 142, 160, (30, 40, 90, 70)  # x2.5 of 57x64
    params = {"image": "f:butterfly.png", "W": W, "H": H, "x": region[0], "y": region[1], "w": region[2],
              "h": region[3]}
    got = png(client.get("/api/render", params={**params, "method": "preview"})).astype(int)
    want = np.asarray(upscaler.pipeline().image(src, size=(H, W), region=region, preview=True)).astype(int)
    assert got.shape == (70, 90, 3) and np.abs(got - want).max() <= 1
    sharp = png(client.get("/api/render", params=params)).astype(int)
    assert np.abs(got - sharp).mean() > 0.5  # the seams between codes show
    assert client.get("/api/render", params={**params, "method": "nearest"}).status_code == 422


def test_render_window_equals_region_render(client, upscaler, app):
    """Windows come from the server's cache of features and maps: the region render up to float
    rounding (1 LSB); a second window of the same view encodes nothing new."""
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    W, H, region = 399, 448, (120, 210, 160, 90)  # x7 of 57x64
    got = png(client.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "x": region[0],
                                                "y": region[1], "w": region[2], "h": region[3],
                                                "view": "100,200,290,130"}))
    want = np.asarray(upscaler.upscale(src, size=(H, W), region=region))
    assert got.shape == (90, 160, 3)
    assert np.abs(got.astype(int) - want).max() <= 1
    cache = app.state.windows.cache
    assert app.state.warmer.wait_idle(120)  # the server warms the rest of the image once idle
    feat = next(g for k, g in cache.entries.items() if k[1] == "feat")
    filled = feat.filled
    got = png(client.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "x": 260, "y": 280,
                                                "w": 100, "h": 40, "view": "100,200,290,130"}))
    assert feat.filled == filled
    want = np.asarray(upscaler.upscale(src, size=(H, W), region=(260, 280, 100, 40)))
    assert np.abs(got.astype(int) - want).max() <= 1
    bad = client.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "w": 10, "h": 10,
                                            "view": "300,150,300,200"})
    assert bad.status_code == 422 and "view x=300" in bad.json()["detail"]


def test_the_server_warms_the_first_image_so_views_only_decode(upscaler, folder):
    """Started on a folder, the server computes the first image's features and maps while idle; a view
    of it then encodes nothing and equals the region render (1 LSB)."""
    app = create_app(upscaler, folder, SMALL)
    try:
        assert app.state.warmer.wait_idle(120) and app.state.warmer.done >= 1
        cache = app.state.windows.cache
        grids = dict(cache.entries)
        assert {k[0][0] for k in grids} == {"f:butterfly.png"} and len(grids) == 2
        assert all(bool(g.done.all()) for g in grids.values())
        filled = {k: g.filled for k, g in grids.items()}
        src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
        with TestClient(app, base_url="http://localhost") as c:
            got = png(c.get("/api/render", params={"image": "f:butterfly.png", "W": 228, "H": 256, "x": 50, "y": 60,
                                                   "w": 150, "h": 120, "view": "0,0,200,190"}))
        assert np.abs(got.astype(int) - np.asarray(upscaler.upscale(src, size=(256, 228), region=(50, 60, 150, 120)))
                      ).max() <= 1
        assert {k: g.filled for k, g in cache.entries.items()} == filled
    finally:
        app.state.stop_renders()


def test_the_server_warms_folder_images_in_name_order_while_they_fit(upscaler, tmp_path):
    """At start the server warms the folder's first images in name order, each only where it fits beside
    what the cache holds: nothing is evicted for it."""
    for name in ("c.png", "a.png", "b.png"):
        shutil.copy(GOLDEN / "set5_butterfly_in.png", tmp_path / name)
    model = upscaler.model
    one = 57 * 64 * (int(model.encoder.out_dim) + model.map_channels) * 4  # features and maps, fp32
    app = create_app(upscaler, tmp_path, dataclasses.replace(SMALL, cache_bytes=int(one * 2.5)))
    try:
        assert app.state.warmer.wait_idle(120)
        cache = app.state.windows.cache
        assert sorted({k[0][0] for k in cache.entries}) == ["f:a.png", "f:b.png"] and cache.evicted == 0
        assert all(bool(g.done.all()) for g in cache.entries.values())
    finally:
        app.state.stop_renders()


def test_the_warmer_waits_for_quiet_gives_way_to_renders_and_resumes():
    from liif.api import RenderCancelled
    from liif.serve.warm import Warmer

    busy = threading.Event()
    busy.set()
    starts: list[float] = []
    steps: list[int] = []

    def job(cancel) -> None:  # ten pieces of 20 ms, asking between pieces
        starts.append(time.monotonic())
        while len(steps) < 10:
            if cancel():
                raise RenderCancelled("a render came")
            time.sleep(0.02)
            steps.append(1)

    warmer = Warmer(busy.is_set, quiet=0.1)
    try:
        warmer.add("image", job)
        time.sleep(0.4)
        assert starts == [] and not warmer.idle()  # the renderer is busy: nothing starts
        busy.clear()
        deadline = time.monotonic() + 5
        while not steps and time.monotonic() < deadline:
            time.sleep(0.005)
        busy.set()  # a render comes in the middle of the job
        deadline = time.monotonic() + 5
        while warmer.interrupted == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert warmer.interrupted == 1 and warmer.done == 0 and 0 < len(steps) < 10
        busy.clear()
        assert warmer.wait_idle(5) and warmer.done == 1 and len(steps) == 10 and len(starts) == 2
    finally:
        warmer.stop()


def test_bicubic_window_is_the_crop_of_the_full_resize(client):
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    W, H, (x, y, w, h) = 399, 448, (120, 210, 160, 90)
    got = png(client.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "x": x, "y": y,
                                                "w": w, "h": h, "method": "bicubic"}))
    full = np.asarray(src.resize((W, H), Image.Resampling.BICUBIC))[y:y + h, x:x + w]
    d = np.abs(got.astype(int) - full.astype(int))
    assert d.max() <= 1 and (d > 0).mean() < 0.01
    assert np.array_equal(got, np.asarray(bicubic_window(src, (H, W), (x, y, w, h))))


@pytest.mark.parametrize("params", [
    {"W": 10**9, "H": 10**9, "w": 100, "h": 100},  # absurd: above any bound
    {"W": 10**18, "H": 100, "w": 1, "h": 1},
    {"W": 0, "H": 100, "w": 1, "h": 1},
    {"W": -5, "H": 100, "w": 1, "h": 1},
    {"W": "many", "H": 100, "w": 1, "h": 1},
    {"W": 100, "H": 100, "w": 0, "h": 1},
    {"W": 100, "H": 100, "x": -1, "w": 1, "h": 1},
    {"W": 57 * 65, "H": 64, "w": 1, "h": 1},  # over 64x the input width
    {"W": 400, "H": 400, "x": 350, "w": 100, "h": 10},  # window outside the output
    {"W": 1000, "H": 1000, "w": 201, "h": 200},  # 40,200 pixels > 40,000 per request
    {"W": 100, "H": 100, "w": 10, "h": 10, "method": "nearest"},
])
def test_absurd_render_requests_refused(client, params):
    r = client.get("/api/render", params={"image": "f:butterfly.png", **params})
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_download(client, upscaler):
    r = client.get("/api/download", params={"image": "f:butterfly.png", "W": 171, "H": 192})
    assert 'filename="butterfly-liif-171x192.png"' in r.headers["content-disposition"]
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    assert np.array_equal(png(r), np.asarray(upscaler.upscale(src, size=(192, 171))))
    too_big = client.get("/api/download", params={"image": "f:butterfly.png", "W": 400, "H": 400})
    assert too_big.status_code == 422


def test_upload_then_render(client, upscaler):
    src = Image.open(GOLDEN / "set14_comic_in.png").convert("RGB")
    r = client.post("/api/upload", files={"file": ("comic.png", encode(src), "image/png")})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["id"].startswith("u:") and (info["width"], info["height"]) == src.size
    got = png(client.get("/api/render", params={"image": info["id"], "W": 200, "H": 160, "x": 50, "y": 40,
                                                "w": 60, "h": 50}))
    assert np.array_equal(got, np.asarray(upscaler.upscale(src, size=(160, 200), region=(50, 40, 60, 50))))
    # JPEG is accepted too, and decoded to RGB
    r = client.post("/api/upload", files={"file": ("c.jpg", encode(src, "JPEG"), "image/jpeg")})
    assert r.status_code == 200 and r.json()["width"] == 40


def test_oversized_upload_refused(client):
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise))  # ~270 kB of incompressible PNG > 200 kB
    assert len(data) > SMALL.upload_bytes
    r = client.post("/api/upload", files={"file": ("big.png", data, "image/png")})
    assert r.status_code == 413
    # the same body streamed without a Content-Length (chunked) is cut off as it arrives
    boundary = "liifboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = client.post("/api/upload", content=chunks,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413
    # small file, too many pixels once decoded (a decompression bomb in miniature)
    flat = encode(Image.new("RGB", (600, 600), (10, 20, 30)))
    assert len(flat) < SMALL.upload_bytes
    r = client.post("/api/upload", files={"file": ("flat.png", flat, "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


@pytest.mark.parametrize("name,data,ctype", [
    ("notes.png", b"this is not a PNG at all", "image/png"),
    ("notes.txt", b"hello", "text/plain"),
    ("anim.gif", encode(Image.new("P", (8, 8)), "GIF"), "image/gif"),
    ("anim.png", encode(Image.new("P", (8, 8)), "GIF"), "image/png"),  # GIF bytes under a PNG name
    ("cut.png", encode(Image.new("RGB", (64, 64), (1, 2, 3)))[:60], "image/png"),  # truncated
])
def test_non_image_upload_refused(client, name, data, ctype):
    r = client.post("/api/upload", files={"file": (name, data, ctype)})
    assert r.status_code == 415, r.text


def test_twenty_concurrent_clients_bounded(folder, upscaler):
    """20 clients at once against a real server: 1 renders, 2 wait, the rest get 503 with
    Retry-After at once; the renders that ran are correct and the server keeps serving."""
    params = {"image": "f:butterfly.png", "W": 456, "H": 512, "x": 100, "y": 100, "w": 200, "h": 190}
    start = threading.Barrier(20)
    results: list[tuple[int, bytes, str | None, float]] = []
    lock = threading.Lock()
    app = create_app(upscaler, folder, SMALL)
    with serve_in_thread(app) as base:

        def one() -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                start.wait()
                t0 = time.monotonic()
                r = c.get("/api/render", params=params)
                with lock:
                    results.append((r.status_code, r.content, r.headers.get("retry-after"), time.monotonic() - t0))

        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        with httpx.Client(base_url=base, timeout=10) as c:  # answered while renders are running
            t0 = time.monotonic()
            assert c.get("/api/config").status_code == 200
            assert time.monotonic() - t0 < 5
        for t in threads:
            t.join(timeout=300)
        codes = sorted(code for code, *_ in results)
        assert len(codes) == 20 and set(codes) <= {200, 503}, codes
        ok = [body for code, body, *_ in results if code == 200]
        busy = [(ra, dt) for code, _, ra, dt in results if code == 503]
        assert 1 <= len(ok) <= SMALL.workers + SMALL.queue + 1, codes
        assert len(busy) >= 20 - SMALL.workers - SMALL.queue - 1, codes
        assert all(ra == "1" for ra, _ in busy)
        gate = app.state.gate
        assert gate.peak_running <= SMALL.workers and gate.peak_admitted <= SMALL.workers + SMALL.queue
        src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
        want = np.asarray(upscaler.upscale(src, size=(512, 456), region=(100, 100, 200, 190)))
        assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(b))), want) for b in ok)
        with httpx.Client(base_url=base, timeout=120) as c:  # and it still renders afterwards
            assert c.get("/api/render", params=params).status_code == 200


# --- hardening: cancellation, time limit, shutdown, the render queue, hosts, links, bombs, the port ---

BUTTERFLY_WINDOW = {"image": "f:butterfly.png", "W": 456, "H": 512, "x": 100, "y": 100, "w": 200, "h": 190}


class UntilCancelled:
    """The real upscaler, but every render repeats until the server cancels it (the real renderer
    raises on ``cancel``) or the test releases it; at most 300 repeats, so it always ends."""

    def __init__(self, upscaler) -> None:
        self.upscaler, self.model = upscaler, upscaler.model
        self.started, self.release = threading.Event(), threading.Event()

    def repeat(self, render):
        self.started.set()
        out = render()
        for _ in range(300):
            if self.release.is_set():
                break
            out = render()
        return out

    def upscale(self, image, **kw):
        return self.repeat(lambda: self.upscaler.upscale(image, **kw))

    def pipeline(self, **kw):
        real = self.upscaler.pipeline(**kw)
        return type("Repeating", (), {"image": lambda _, image, **a: self.repeat(lambda: real.image(image, **a)),
                                      "warm": lambda _, *a, **k: real.warm(*a, **k)})()


def wait_until(cond, seconds: float = 30) -> bool:
    """Poll ``cond`` every 50 ms for at most ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def cli(*args: str) -> subprocess.Popen:
    """``liif ...`` in a subprocess, with the same liif package as this test process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(liif.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", "import sys; from liif.cli import main; sys.exit(main())",
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_header_only(w: int, h: int) -> bytes:
    """A valid 1x1 PNG whose header claims w x h pixels (a decompression bomb's header)."""
    data = encode(Image.new("L", (1, 1)))
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return data[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def test_upscale_cancel_stops_between_stripes(upscaler):
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    calls = []

    def second_call() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(liif.api.RenderCancelled):
        upscaler.upscale(src, size=(256, 228), cancel=second_call)  # 58K pixels: two stripes
    assert len(calls) == 2  # checked before the render and after the first stripe, where it stopped
    never = upscaler.upscale(src, size=(32, 28), cancel=lambda: False)
    assert np.array_equal(np.asarray(never), np.asarray(upscaler.upscale(src, size=(32, 28))))


def test_render_over_the_time_limit_gets_504(upscaler, folder):
    slow = UntilCancelled(upscaler)
    app = create_app(slow, folder, dataclasses.replace(SMALL, request_seconds=0.5))
    try:
        with TestClient(app, base_url="http://localhost") as c:
            r = c.get("/api/render", params=BUTTERFLY_WINDOW)
            assert r.status_code == 504 and "allowed per request" in r.json()["detail"]
            assert app.state.gate.running == 0 and app.state.gate.cancelled == 1
    finally:
        slow.release.set()


def test_render_stops_when_its_client_leaves(upscaler, folder):
    slow = UntilCancelled(upscaler)
    app = create_app(slow, folder, SMALL)
    query = "&".join(f"{k}={v}" for k, v in BUTTERFLY_WINDOW.items())
    try:
        with serve_in_thread(app) as base:
            with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as s:
                s.sendall(f"GET /api/render?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                assert slow.started.wait(30)
            # the client has gone: the worker is free again long before 300 repeats
            assert wait_until(lambda: app.state.gate.running == 0), "the render went on after the client left"
            assert app.state.gate.cancelled == 1
            slow.release.set()
            with httpx.Client(base_url=base, timeout=60) as c:
                assert c.get("/api/render", params=BUTTERFLY_WINDOW).status_code == 200
    finally:
        slow.release.set()


def test_bicubic_waits_its_turn_in_the_render_queue(upscaler, folder):
    """bicubic goes through the same bounded queue as LIIF (off the event loop): with the only
    slot taken and no queue, it gets 503 while /api/config still answers."""
    slow = UntilCancelled(upscaler)
    app = create_app(slow, folder, dataclasses.replace(SMALL, workers=1, queue=0))
    try:
        with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=60) as c:
            busy = threading.Thread(target=lambda: httpx.get(f"{base}/api/render", params=BUTTERFLY_WINDOW,
                                                             timeout=60))
            busy.start()
            assert slow.started.wait(30)
            r = c.get("/api/render", params={**BUTTERFLY_WINDOW, "method": "bicubic"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert c.get("/api/config").status_code == 200
            slow.release.set()
            busy.join(timeout=60)
            assert png(c.get("/api/render", params={**BUTTERFLY_WINDOW, "method": "bicubic"})).shape == (190, 200, 3)
            assert app.state.gate.peak_running == 1
    finally:
        slow.release.set()


def test_sigterm_stops_a_running_render_and_exits(folder, official_path):
    port = free_port()
    proc = cli("serve", "--weights", str(official_path), "--images", str(folder), "--port", str(port))
    try:
        assert proc.stderr is not None
        assert "http://127.0.0.1:" in proc.stderr.readline()  # the banner: listening
        answers: queue.Queue = queue.Queue()

        def download() -> None:  # 3648x4096 from 57x64: minutes on a CPU
            try:
                answers.put(httpx.get(f"http://127.0.0.1:{port}/api/download", timeout=600,
                                      params={"image": "f:butterfly.png", "W": 3648, "H": 4096}).status_code)
            except httpx.HTTPError as e:
                answers.put(type(e).__name__)

        threading.Thread(target=download, daemon=True).start()
        time.sleep(1.5)  # the render is under way
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)  # old behaviour: the render went on for minutes after SIGTERM
        assert answers.get(timeout=10) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_port_is_one_line_error_and_no_banner(official_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = cli("serve", "--weights", str(official_path), "--port", str(port))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert err.strip().count("\n") == 0 and err.startswith("liif: error: cannot listen on 127.0.0.1:"), err
    assert "http://" not in out + err


def test_host_origin_checks_and_security_headers(client):
    upload = {"file": ("b.png", (GOLDEN / "set5_butterfly_in.png").read_bytes(), "image/png")}
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    for host in ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"]:
        assert client.get("/api/config", headers={"Host": host}).status_code == 200, host
    for host in ["evil.example", "evil.example:8000", "localhost.evil.example", "evil@localhost", ""]:
        r = client.get("/api/config", headers={"Host": host})
        assert r.status_code == 400 and r.headers["x-frame-options"] == "DENY", host
    assert client.post("/api/upload", files=upload, headers={"Origin": "http://localhost:8000",
                                                             "Host": "localhost:8000"}).status_code == 200
    assert client.post("/api/upload", files=upload).status_code == 200  # no Origin: not from a browser page
    for headers in [{"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://localhost:8000", "Sec-Fetch-Site": "cross-site"}]:
        assert client.post("/api/upload", files=upload, headers=headers).status_code == 403, headers


def test_allowed_host_names(upscaler, folder):
    """The bind address counts unless it is a wildcard; --allow-host adds names."""
    assert liif.serve.security.allowed_hosts("0.0.0.0") == ["localhost", "127.0.0.1", "::1"]
    assert liif.serve.security.allowed_hosts("::", ["Box.lan", "[fe80::1]"])[-2:] == ["box.lan", "fe80::1"]
    app = create_app(upscaler, folder, SMALL, hosts=liif.serve.security.allowed_hosts("10.1.2.3", ["viewer.lan"]))
    with TestClient(app, base_url="http://viewer.lan") as c:
        assert c.get("/api/config").status_code == 200
        assert c.get("/api/config", headers={"Host": "10.1.2.3:8000"}).status_code == 200
        assert c.get("/api/config", headers={"Host": "other.lan"}).status_code == 400


def test_served_file_swapped_for_a_link_is_never_followed(upscaler, tmp_path):
    """x.png flips between a regular file and a link to a file outside the folder while it is
    requested: each answer is the folder's image or 404, never the outside one."""
    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "secret.png"
    shutil.copy(GOLDEN / "set14_comic_in.png", outside)
    shutil.copy(GOLDEN / "set5_butterfly_in.png", images / ".real.png")  # hidden: not served itself
    for i in range(300):  # a busy folder: a check-then-open server has a wide window between the two
        (images / f"y{i:03}.png").write_bytes(b"")
    app = create_app(upscaler, images, SMALL)
    stop = threading.Event()

    def swap() -> None:
        for i in range(1_000_000):
            if stop.is_set():
                return
            tmp = images / ".swap"
            if i % 2:
                os.link(images / ".real.png", tmp)
            else:
                os.symlink(outside, tmp)
            os.replace(tmp, images / "x.png")

    swapper = threading.Thread(target=swap)
    sizes: list[tuple[int, int] | int] = []
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        swapper.start()
        try:
            for _ in range(150):
                app.state.library.decoded.clear()  # read the file every time
                r = c.get("/api/source", params={"image": "f:x.png"})
                sizes.append(Image.open(io.BytesIO(r.content)).size if r.status_code == 200 else r.status_code)
        finally:
            stop.set()
            swapper.join()
    outside_size = Image.open(outside).size
    assert set(sizes) <= {(57, 64), 404}, f"{sizes.count(outside_size)} answers from outside, {sizes.count(500)} 500s"
    assert (57, 64) in sizes


def test_pixel_bombs_refused_from_the_header(upscaler, tmp_path):
    """A tiny file whose header claims 40000x40000 pixels: 413 on upload and when opened from the
    folder (Pillow's own bomb error is no 415 or 500), and the listing skips it."""
    bomb = png_header_only(40_000, 40_000)
    images = tmp_path / "images"
    images.mkdir()
    (images / "bomb.png").write_bytes(bomb)
    (images / "big.png").write_bytes(png_header_only(4000, 4000))  # 16M > 300K allowed, under Pillow's limit
    shutil.copy(GOLDEN / "set5_butterfly_in.png", images / "butterfly.png")
    with TestClient(create_app(upscaler, images, SMALL), base_url="http://localhost") as c:
        r = c.post("/api/upload", files={"file": ("bomb.png", bomb, "image/png")})
        assert r.status_code == 413 and "pixels" in r.json()["detail"]
        listing = c.get("/api/images")
        assert listing.status_code == 200
        assert [i["name"] for i in listing.json()] == ["big.png", "butterfly.png"]
        for name in ["bomb.png", "big.png"]:
            r = c.get("/api/source", params={"image": f"f:{name}"})
            assert r.status_code == 413 and "pixels" in r.json()["detail"], name


def test_upload_applies_exif_orientation(client, upscaler):
    """A JPEG stored 80x64 with EXIF orientation 6 is shown 64x80: the viewer upscales what the user sees."""
    stored = Image.open(GOLDEN / "set14_comic_in.png").convert("RGB").resize((80, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    r = client.post("/api/upload", files={"file": ("rot.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (64, 80)
    got = png(client.get("/api/render", params={"image": r.json()["id"], "W": 128, "H": 160, "x": 0, "y": 0,
                                                "w": 128, "h": 160}))
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    assert np.array_equal(got, np.asarray(upscaler.upscale(upright.convert("RGB"), size=(160, 128))))


def test_lte_model_serves_regions(lte, folder):
    """The viewer drives any decoder family: an LTE window equals the same region of the API's render."""
    from liif.api import Upscaler

    model, spec = lte
    up = Upscaler(model, spec, precision="fp32")
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    W, H, region = 399, 448, (120, 210, 60, 40)  # x7: beyond x4, so the cell clip is in play
    with TestClient(create_app(up, folder, SMALL), base_url="http://localhost") as c:
        got = png(c.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "x": region[0],
                                               "y": region[1], "w": region[2], "h": region[3]}))
    want = np.asarray(up.upscale(src, size=(H, W), region=region))
    full = np.asarray(up.upscale(src, size=(H, W)))
    assert got.shape == (40, 60, 3)
    assert np.array_equal(got, want)
    assert np.abs(want.astype(int) - full[210:250, 120:180].astype(int)).max() <= 1


def test_render_workers_default_to_one_per_core_for_one_thread_decodes():
    from liif.serve.limits import resolve_workers

    assert Limits().workers == 0  # automatic
    assert resolve_workers(Limits(), one_thread_decode=True, cores=2).workers == 2  # LMF: a tile per core
    assert resolve_workers(Limits(), one_thread_decode=True, cores=64).workers == 4
    assert resolve_workers(Limits(), one_thread_decode=False, cores=16).workers == 1  # LIIF: one using every core
    assert resolve_workers(Limits(workers=3), one_thread_decode=False, cores=2).workers == 3  # as asked
