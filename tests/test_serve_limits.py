"""The viewer under load and odd input: decodes bounded and shared, descriptors never leaked, any file
name downloadable, cross-site requests refused."""
from __future__ import annotations

import os
import shutil
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
from test_serve import BUTTERFLY_WINDOW, SMALL, png  # noqa: E402

from conftest import GOLDEN  # noqa: E402
from liif.serve.app import create_app  # noqa: E402
from liif.serve.images import attachment  # noqa: E402

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
