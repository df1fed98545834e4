"""The viewer under load and odd input: decodes bounded and shared, descriptors never leaked, any file
name downloadable, cross-site requests refused."""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="liif serve needs FastAPI: pip install 'liif[serve]'")
httpx = pytest.importorskip("httpx", reason="the server tests need httpx")
pytest.importorskip("uvicorn", reason="liif serve needs uvicorn")

from fastapi.testclient import TestClient  # noqa: E402
from test_serve import BUTTERFLY_WINDOW, SMALL, encode, png, wait_until  # noqa: E402

import liif.serve.library  # noqa: E402
from conftest import GOLDEN, serve_in_thread  # noqa: E402
from liif.serve.app import create_app  # noqa: E402
from liif.serve.images import attachment  # noqa: E402
from liif.serve.limits import Limits  # noqa: E402

BUTTERFLY = GOLDEN / "set5_butterfly_in.png"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")
def test_a_folder_named_like_an_image_is_404_and_leaks_no_descriptor(upscaler, tmp_path):
    """imgs/dir.png is a folder: 404 for every request, and the process's descriptors stay as many
    (before: 500 and one descriptor leaked per request, until the server could open nothing)."""
    images = tmp_path / "images"
    (images / "dir.png").mkdir(parents=True)
    shutil.copy(BUTTERFLY, images / "b.png")
    app = create_app(upscaler, images, SMALL)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        assert c.get("/api/source", params={"image": "f:b.png"}).status_code == 200  # threads started
        before = len(os.listdir("/proc/self/fd"))
        codes = Counter()
        for _ in range(50):
            codes[c.get("/api/source", params={"image": "f:dir.png"}).status_code] += 1
            codes[c.get("/api/render", params={**BUTTERFLY_WINDOW, "image": "f:dir.png"}).status_code] += 1
            codes[c.get("/api/download", params={"image": "f:dir.png", "W": 57, "H": 64}).status_code] += 1
        after = len(os.listdir("/proc/self/fd"))
        assert [i["name"] for i in c.get("/api/images").json()] == ["b.png"]
    assert after <= before + 2, f"{after - before} descriptors more after 150 requests"
    assert codes == {404: 150}


def test_undecodable_file_name_does_not_break_the_listing(upscaler, tmp_path):
    """A file whose name is not UTF-8 is not listed (before: /api/images answered 500 for all)."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(BUTTERFLY, images / "b.png")
    shutil.copy(BUTTERFLY, os.path.join(os.fsencode(images), b"bad\xff.png"))
    with TestClient(create_app(upscaler, images, SMALL), base_url="http://localhost",
                    raise_server_exceptions=False) as c:
        r = c.get("/api/images")
        assert r.status_code == 200 and [i["name"] for i in r.json()] == ["b.png"]
        assert c.get("/api/source", params={"image": "f:bad\ufffd.png"}).status_code == 404


@pytest.mark.parametrize("name,header", [
    ("图片-liif-57x64.png", "attachment; filename=\"__-liif-57x64.png\"; "
                           "filename*=UTF-8''%E5%9B%BE%E7%89%87-liif-57x64.png"),
    ('Café "1" 100%\\x.png', "attachment; filename=\"Cafe _1_ 100__x.png\"; "
                             "filename*=UTF-8''Caf%C3%A9%20%221%22%20100%25%5Cx.png"),
    ("a\r\nSet-Cookie: x.png", "attachment; filename=\"a__Set-Cookie: x.png\"; "
                               "filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x.png"),
    ("bad\udcff.png", "attachment; filename=\"bad_.png\"; filename*=UTF-8''bad%3F.png"),
])
def test_attachment_header_carries_any_name(name, header):
    assert attachment(name) == header
    header.encode("latin-1")  # what HTTP headers carry


def test_download_of_a_non_latin1_name(upscaler, tmp_path):
    """A served 日本.png and an uploaded 图片.png download with the name as RFC 5987 filename* and
    an ASCII filename (before: 500 from the Latin-1 header, after the whole render)."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(BUTTERFLY, images / "日本.png")
    src = Image.open(BUTTERFLY).convert("RGB")
    want = np.asarray(upscaler.upscale(src, size=(64, 57)))
    with TestClient(create_app(upscaler, images, SMALL), base_url="http://localhost",
                    raise_server_exceptions=False) as c:
        r = c.get("/api/download", params={"image": "f:日本.png", "W": 57, "H": 64})
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == ("attachment; filename=\"__-liif-57x64.png\"; "
                                                    "filename*=UTF-8''%E6%97%A5%E6%9C%AC-liif-57x64.png")
        assert np.array_equal(png(r), want)
        up = c.post("/api/upload", files={"file": ("图片.png", BUTTERFLY.read_bytes(), "image/png")})
        assert up.status_code == 200 and up.json()["name"] == "图片.png"
        r = c.get("/api/download", params={"image": up.json()["id"], "W": 57, "H": 64})
        assert r.status_code == 200, r.text
        encoded = r.headers["content-disposition"].split("filename*=UTF-8''")[1]
        assert unquote(encoded) == "图片-liif-57x64.png"
        assert np.array_equal(png(r), want)


class HeldDecodes:
    """Stands in for the library's ``decode_image``: counts the decodes and how many run at once,
    and holds each one until ``release`` is set (at most 60 s), then decodes for real."""

    def __init__(self, real) -> None:
        self.real, self.release, self.lock = real, threading.Event(), threading.Lock()
        self.calls = self.now = self.peak = 0

    def __call__(self, data: bytes, limits: Limits) -> Image.Image:
        with self.lock:
            self.calls += 1
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            self.release.wait(60)
            return self.real(data, limits)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture()
def held(monkeypatch) -> HeldDecodes:
    probe = HeldDecodes(liif.serve.library.decode_image)
    monkeypatch.setattr(liif.serve.library, "decode_image", probe)
    yield probe
    probe.release.set()


def concurrently(n: int, fn) -> tuple[list[threading.Thread], list]:
    """``fn(client)`` in ``n`` threads that start together, on one client with a connection each;
    the answers land in the returned list as they come."""
    start, results, lock = threading.Barrier(n), [], threading.Lock()
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=n))

    def one() -> None:
        start.wait()
        r = fn(client)
        with lock:
            results.append(r)
            if len(results) == n:
                client.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_uploads_decode_a_few_at_once_and_the_rest_get_503(upscaler, held):
    """45 uploads at once: 2 decode, 3 wait, 40 get 503 with Retry-After at once, while /api/config
    still answers. Before, every upload decoded at once in Starlette's 40 threads (3 GB for 40
    uploads of a 4000x3000 PNG) and /api/config waited for a free thread."""
    limits = dataclasses.replace(SMALL, decoders=2, decode_queue=3)
    app = create_app(upscaler, None, limits)
    data = encode(Image.open(BUTTERFLY).convert("RGB"))
    with serve_in_thread(app) as base:
        threads, results = concurrently(45, lambda c: c.post(f"{base}/api/upload",
                                                             files={"file": ("b.png", data, "image/png")}))
        try:
            assert wait_until(lambda: len(results) >= 40 and held.now == 2), (len(results), held.now)
            with httpx.Client(base_url=base, timeout=10) as c:
                assert c.get("/api/config").status_code == 200
        finally:
            held.release.set()
            for t in threads:
                t.join(timeout=60)
    assert Counter(r.status_code for r in results) == {200: 5, 503: 40}
    assert all(r.headers["retry-after"] == "1" for r in results if r.status_code == 503)
    assert held.calls == 5 and held.peak == 2
    gate = app.state.decodes
    assert (gate.peak_running, gate.peak_admitted, gate.refused, gate.jobs) == (2, 5, 40, 5)
    assert len(app.state.library.uploads) == 5


def test_a_served_file_is_decoded_once_for_concurrent_first_requests(upscaler, tmp_path, held):
    """8 first requests at once (sources and bicubic windows) for one served file: one decode, all 8
    answered from it; later requests use the decoded image, a changed file is decoded again."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(BUTTERFLY, images / "b.png")
    app = create_app(upscaler, images, dataclasses.replace(SMALL, queue=8))
    window = {**BUTTERFLY_WINDOW, "image": "f:b.png", "method": "bicubic"}
    turns = iter(range(8))
    with serve_in_thread(app) as base:
        def ask(c):
            if next(turns) % 2:
                return c.get(f"{base}/api/render", params=window)
            return c.get(f"{base}/api/source", params={"image": "f:b.png"})

        threads, results = concurrently(8, ask)
        def shared() -> int:
            return app.state.decodes.shared if getattr(app.state, "decodes", None) else 0

        try:  # before: each of the 8 decoded the file itself
            assert wait_until(lambda: held.calls == 8 or shared() == 7), (held.calls, shared())
        finally:
            held.release.set()
            for t in threads:
                t.join(timeout=60)
        assert [r.status_code for r in results] == [200] * 8
        assert held.calls == 1
        sources = {r.content for r in results if r.request.url.path == "/api/source"}
        assert len(sources) == 1 and png(results[0]).shape[-1] == 3
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.get("/api/render", params=window).status_code == 200
            assert held.calls == 1
            os.utime(images / "b.png", ns=(1, 1))  # another mtime: another file
            assert c.get("/api/source", params={"image": "f:b.png"}).status_code == 200
            assert held.calls == 2


def test_decodes_give_memory_back(upscaler, monkeypatch):
    """After each decode the heap's free pages go back to the OS (malloc_trim), so the resident
    memory after bursts of uploads stays flat (before: 0.4 -> 3.96 GB over seven bursts)."""
    import liif.serve.decodes

    trims = []
    monkeypatch.setattr(liif.serve.decodes, "release_free_memory", lambda: trims.append(1))
    with TestClient(create_app(upscaler, None, SMALL), base_url="http://localhost") as c:
        r = c.post("/api/upload", files={"file": ("b.png", BUTTERFLY.read_bytes(), "image/png")})
        assert r.status_code == 200
        assert len(trims) == 1
        assert c.get("/api/source", params={"image": r.json()["id"]}).status_code == 200
        assert len(trims) == 2  # the source PNG is made in the decode gate too


def test_cross_origin_uploads_and_cross_site_work_refused(upscaler, tmp_path):
    """An upload without Sec-Fetch-Site (older browsers) must come from this very host and port
    (before: any port of an allowed name passed); a GET that starts a decode or a render, which a
    link or an <img> of another site can send, is refused when the browser marks it cross-site or
    same-site (before: the render ran)."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(BUTTERFLY, images / "b.png")
    upload = {"file": ("b.png", BUTTERFLY.read_bytes(), "image/png")}
    with TestClient(create_app(upscaler, images, SMALL), base_url="http://localhost:8000") as c:
        for origin, code in [("http://localhost:8000", 200), ("https://localhost:8000", 200),
                             ("http://localhost:9999", 403), ("http://localhost", 403),
                             ("http://127.0.0.1:8000", 403), ("http://[::1]:8000", 403)]:
            r = c.post("/api/upload", files=upload, headers={"Origin": origin})
            assert r.status_code == code, (origin, r.text)
        assert c.post("/api/upload", files=upload, headers={"Origin": "http://localhost", "Host": "localhost"}
                      ).status_code == 200  # both on port 80
        assert c.post("/api/upload", files=upload, headers={"Origin": "http://localhost:9999",
                                                            "Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert c.post("/api/upload", files=upload, headers={"Origin": "http://localhost:8000",
                                                            "Sec-Fetch-Site": "same-site"}).status_code == 403
        work = [("/api/render", {**BUTTERFLY_WINDOW, "image": "f:b.png", "method": "bicubic"}),
                ("/api/source", {"image": "f:b.png"}), ("/api/download", {"image": "f:b.png", "W": 57, "H": 64})]
        for path, params in work:
            for site, code in [("cross-site", 403), ("same-site", 403), ("same-origin", 200), ("none", 200),
                               (None, 200)]:
                r = c.get(path, params=params, headers={"Sec-Fetch-Site": site} if site else {})
                assert r.status_code == code, (path, site, r.text)
                assert r.headers["x-frame-options"] == "DENY"
        for path in ["/api/config", "/api/images", "/"]:  # no work started: answered as before
            assert c.get(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200, path
