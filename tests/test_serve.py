"""The viewer server: what it renders, what it refuses (with which HTTP code), and that it stays up."""
from __future__ import annotations

import contextlib
import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="liif serve needs FastAPI: pip install 'liif[serve]'")
httpx = pytest.importorskip("httpx", reason="the server tests need httpx")
uvicorn = pytest.importorskip("uvicorn", reason="liif serve needs uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import liif.api  # noqa: E402
from conftest import GOLDEN  # noqa: E402
from liif.serve.app import Limits, bicubic_window, create_app  # noqa: E402

SMALL = Limits(upload_bytes=200_000, input_pixels=300_000, view_pixels=40_000, download_pixels=100_000,
               workers=1, queue=2)


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


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
    with TestClient(app) as c:
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


def test_render_window_equals_region_render(client, upscaler):
    src = Image.open(GOLDEN / "set5_butterfly_in.png").convert("RGB")
    W, H, region = 399, 448, (120, 210, 160, 90)  # x7 of 57x64
    got = png(client.get("/api/render", params={"image": "f:butterfly.png", "W": W, "H": H, "x": region[0],
                                                "y": region[1], "w": region[2], "h": region[3]}))
    want = np.asarray(upscaler.upscale(src, size=(H, W), region=region))
    assert got.shape == (90, 160, 3)
    assert np.array_equal(got, want)


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
