"""End to end in headless Chromium: the viewer page, an upload, zoom by wheel and button, and the
pixels on the canvas compared with a direct region render from the API.

Chromium (Debian package ``chromium``) is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL on file descriptors 3 and 4), so no
driver package or browser download is needed. The viewer test is skipped, with the reason shown, only
when no chromium executable exists; the tests of how the pipe's descriptors reach the browser run
without it. ``LIIF_VIEWER_SCREENSHOT=docs/viewer.png`` keeps the screenshot.
"""
from __future__ import annotations

import base64
import inspect
import io
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="liif serve needs FastAPI: pip install 'liif[serve]'")
pytest.importorskip("uvicorn", reason="liif serve needs uvicorn")

import liif.serve.app  # noqa: E402
from conftest import DATA, serve_in_thread  # noqa: E402
from liif.bench.chrome import Chromium, Page, find_chromium, spawn_with_fds  # noqa: E402
from liif.serve.app import create_app  # noqa: E402
from liif.serve.images import bicubic_window  # noqa: E402
from liif.serve.limits import Limits  # noqa: E402

CHROMIUM = find_chromium()
# CSS pixels of the browser window (device scale factor 1); larger when keeping the screenshot
VIEW = (1100, 640) if os.environ.get("LIIF_VIEWER_SCREENSHOT") else (760, 460)
IMAGE = DATA / "Set14" / "LR_bicubic" / "X4" / "img_011.png"  # 192x128

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (CI runs `apt-get install -y chromium`; it failed or was skipped)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    b = Chromium(CHROMIUM, tmp / "profile", VIEW, tmp / "chromium.log")  # type: ignore[arg-type]
    try:
        b.send("Browser.getVersion", timeout=60)
    except (RuntimeError, TimeoutError) as e:
        b.close()
        pytest.fail(f"chromium did not start: {e}\n{(tmp / 'chromium.log').read_text(errors='replace')[-2000:]}")
    yield b
    b.close()


def sharp_state(page: Page) -> dict[str, Any]:
    """Wait until the viewer shows the final LIIF render of its current view; return its state."""
    return page.wait_for("""(() => { const s = window.liifViewer.state();
        return document.documentElement.dataset.sharp === '1' && s.liif && s.liif.tiles.length ? s : null; })()""")


def covers(tiles: list[list[int]], g: dict[str, int]) -> bool:
    """The tiles cover the visible window exactly once."""
    mask = np.zeros((g["h"], g["w"]), dtype=int)
    for x, y, w, h in tiles:
        x0, y0, x1, y1 = max(x, g["x"]), max(y, g["y"]), min(x + w, g["x"] + g["w"]), min(y + h, g["y"] + g["h"])
        mask[y0 - g["y"]:y1 - g["y"], x0 - g["x"]:x1 - g["x"]] += 1
    return bool((mask == 1).all())


@needs_chromium
def test_viewer_zoom_shows_region_render(browser, upscaler, tmp_path):
    # 1 worker and a small queue: the page must cope with 503s while it zooms
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(IMAGE, folder / IMAGE.name)  # the page opens it at once, then the same file is uploaded
    app = create_app(upscaler, folder, Limits(workers=1, queue=2))
    src = Image.open(IMAGE).convert("RGB")
    with serve_in_thread(app) as base:
        page = Page(browser, VIEW)
        page.send("Page.enable")
        page.send("Page.navigate", {"url": base + "/"})
        page.wait_for("window.liifViewer && window.liifViewer.ready", timeout=60)
        page.eval("window.liifViewer.prefetch = false")  # the in-process renders below need the CPU
        n_options = page.eval("document.getElementById('images').options.length")
        assert n_options == 2

        # open an image the way a person does: the upload control
        doc = page.send("DOM.getDocument")["root"]["nodeId"]
        node = page.send("DOM.querySelector", {"nodeId": doc, "selector": "#upload"})["nodeId"]
        page.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(IMAGE)]})
        first = page.wait_for("(() => { const s = window.liifViewer.state();"
                              " return s.image && s.image.id.startsWith('u:') && s; })()")
        assert first["image"]["id"].startswith("u:") and first["image"]["width"] == src.width
        fit_zoom = first["zoom"]

        # zoom in: wheel steps over a point of the image, then the + button
        box = page.eval("(() => { const r = document.getElementById('view').getBoundingClientRect();"
                        " return [r.left, r.top, r.width, r.height]; })()")
        px, py = box[0] + box[2] * 0.42, box[1] + box[3] * 0.55
        page.mouse("mouseMoved", px, py)
        for _ in range(4):
            page.mouse("mouseWheel", px, py, deltaX=0, deltaY=-120)
            time.sleep(0.03)
        page.click("#zoom-in")
        state = sharp_state(page)
        g = state["geometry"]
        assert state["zoom"] > 2 * fit_zoom and state["mode"] == "liif"
        assert g["W"] == round(src.width * state["zoom"]) and g["H"] == round(src.height * state["zoom"])
        assert g["w"] == state["canvas"]["width"] and g["h"] == state["canvas"]["height"]  # zoomed past the edges

        # the pixels on screen are tiles of a fixed grid, each the API's region render of its window (1 LSB)
        tiles = state["liif"]["tiles"]
        assert covers(tiles, g)  # exactly, each tile the visible part of one cell of the 256-px grid
        assert all(x // 256 == (x + w - 1) // 256 and y // 256 == (y + h - 1) // 256 for x, y, w, h in tiles)
        assert len(tiles) == len({(x // 256, y // 256) for x, y, _, _ in tiles})
        shown = page.canvas_pixels(g["ox"] + g["x"], g["oy"] + g["y"], g["w"], g["h"])
        assert (shown[..., 3] == 255).all()
        for tx, ty, tw, th in tiles:
            want = np.asarray(upscaler.upscale(src, size=(g["H"], g["W"]), region=(tx, ty, tw, th)))
            x0, y0 = max(tx, g["x"]), max(ty, g["y"])
            x1, y1 = min(tx + tw, g["x"] + g["w"]), min(ty + th, g["y"] + g["h"])
            part = shown[y0 - g["y"]:y1 - g["y"], x0 - g["x"]:x1 - g["x"], :3].astype(int)
            err = np.abs(part - want[y0 - ty:y1 - ty, x0 - tx:x1 - tx]).max()
            assert err <= 1, f"tile {(tx, ty, tw, th)}: {err}"
        # and differs from the plain bicubic view of the same window (it is not a resized preview)
        page.eval("(() => { const m = document.getElementById('mode'); m.value = 'split';"
                  " m.dispatchEvent(new Event('change')); })()")
        page.wait_for("document.documentElement.dataset.sharp === '1' &&"
                      " window.liifViewer.state().bicubic.tiles.length > 0")
        shot = base64.b64decode(page.send("Page.captureScreenshot", {"format": "png"})["data"])
        split = page.canvas_pixels(g["ox"] + g["x"], g["oy"] + g["y"], g["w"], g["h"])[..., :3].astype(int)
        cut = g["w"] // 2
        full = np.asarray(src.resize((g["W"], g["H"]), Image.Resampling.BICUBIC))[
            g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]].astype(int)
        bicubic = np.zeros_like(split)  # the bicubic view comes in the same tiles, each a Pillow box resize
        for tx, ty, tw, th in page.eval("window.liifViewer.state().bicubic.tiles"):
            x0, y0 = max(tx, g["x"]), max(ty, g["y"])
            x1, y1 = min(tx + tw, g["x"] + g["w"]), min(ty + th, g["y"] + g["h"])
            want = np.asarray(bicubic_window(src, (g["H"], g["W"]), (tx, ty, tw, th)))
            bicubic[y0 - g["y"]:y1 - g["y"], x0 - g["x"]:x1 - g["x"]] = want[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
        right = slice(cut + 80, g["w"])  # right of the divider and its label
        assert np.array_equal(split[:, right], bicubic[:, right])
        assert np.abs(bicubic - full).max() <= 2  # and that is Pillow's bicubic up to rounding
        assert np.abs(split[:, :cut - 80] - shown[:, :cut - 80, :3]).max() == 0
        assert np.abs(bicubic - shown[..., :3]).mean() > 1.0
    im = Image.open(io.BytesIO(shot))
    assert im.size == VIEW
    im.save(tmp_path / "viewer.png")
    keep = os.environ.get("LIIF_VIEWER_SCREENSHOT")
    if keep:
        from liif.imaging import save_png

        save_png(im, keep)


def view_of(page: Page) -> dict[str, Any]:
    return page.eval("(() => { const s = window.liifViewer.state();"
                     " return {name: s.image && s.image.name, zoom: s.zoom, cx: s.cx, cy: s.cy,"
                     " hash: location.hash, sharp: document.documentElement.dataset.sharp}; })()")


def open_page(page: Page, url: str) -> None:
    page.send("Page.navigate", {"url": "about:blank"})  # a fresh load, not a hash change
    page.send("Page.navigate", {"url": url})
    page.wait_for("window.liifViewer && window.liifViewer.ready", timeout=60)


@needs_chromium
def test_first_image_and_deep_links(browser, upscaler, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    src = Image.open(IMAGE).convert("RGB")
    src.crop((40, 30, 136, 94)).save(folder / "a.png")  # 96x64: sorts first
    src.save(folder / "b.png")
    with serve_in_thread(create_app(upscaler, folder, Limits(workers=1, queue=4))) as base:
        page = Page(browser, VIEW)
        # no deep link: the folder's first image, fitted, drawn by the model
        open_page(page, base + "/")
        page.wait_for("document.documentElement.dataset.sharp === '1'")
        v = view_of(page)
        box = page.eval("(() => { const c = document.getElementById('view');"
                        " return [c.clientWidth, c.clientHeight]; })()")
        assert v["name"] == "a.png" and v["zoom"] == pytest.approx(min(box[0] / 96, box[1] / 64))
        assert (v["cx"], v["cy"]) == (48, 32) and "image=a.png" in v["hash"]

        # a deep link opened cold shows that view, and becomes sharp
        open_page(page, base + "/#image=b.png&zoom=3&x=100&y=60")
        v = view_of(page)
        assert (v["name"], v["zoom"], v["cx"], v["cy"]) == ("b.png", 3, 100, 60)
        page.wait_for("document.documentElement.dataset.sharp === '1'")

        # a drag pans and the hash follows (replaceState: no new history entry)
        length = page.eval("history.length")
        cx, cy = box[0] / 2, box[1] / 2 + page.eval("document.getElementById('view').getBoundingClientRect().top")
        page.mouse("mousePressed", cx, cy, button="left", clickCount=1)
        for k in range(1, 5):
            page.mouse("mouseMoved", cx - 15 * k, cy, button="left")
        page.mouse("mouseReleased", cx - 60, cy, button="left", clickCount=1)
        assert page.eval("document.documentElement.dataset.sharp") == "0"
        v = view_of(page)
        assert v["cx"] == pytest.approx(120) and v["cy"] == pytest.approx(60)
        assert "x=120&" in v["hash"] and "y=60" in v["hash"] and page.eval("history.length") == length
        page.wait_for("document.documentElement.dataset.sharp === '1'")

        # a hash changed by hand moves the view
        page.eval("location.hash = '#image=a.png&zoom=2&x=20&y=30'")
        page.wait_for("window.liifViewer.state().image.name === 'a.png'")
        v = view_of(page)
        assert (v["zoom"], v["cx"], v["cy"]) == (2, 20, 30)

        # at the source's own size the page shows the source: sharp only once it is drawn (the source
        # comes beside the tiles' requests; here it is held back for 1.5 s)
        source_png = liif.serve.app.png_bytes
        monkeypatch.setattr(liif.serve.app, "png_bytes", lambda im: (time.sleep(1.5), source_png(im))[1])
        page.send("Page.navigate", {"url": "about:blank"})
        page.send("Page.navigate", {"url": base + "/#image=b.png&zoom=1"})
        page.wait_for("window.liifViewer && (window.liifViewer.state().image || {}).name === 'b.png'")
        time.sleep(0.5)
        assert page.eval("document.documentElement.dataset.sharp") == "0"
        page.wait_for("document.documentElement.dataset.sharp === '1'")
        centre = page.eval("(() => { const c = document.getElementById('view');"
                           " return [...c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data]; })()")
        w, h = src.size
        assert np.abs(np.array(centre[:3]) - np.asarray(src)[h // 2, w // 2]).max() <= 24  # not the dark background


# -- the descriptors of the debugging pipe -------------------------------------------------------------------

# The child reads its fd 3 to the end, writes it back reversed on its fd 4, then the descriptors above 2
# it holds (it must hold 3 and 4 only).
ECHO = ("import fcntl, os\n"
        "data = b''\n"
        "while chunk := os.read(3, 1 << 16):\n"
        "    data += chunk\n"
        "def is_open(fd):\n"
        "    try:\n"
        "        return fcntl.fcntl(fd, fcntl.F_GETFD) >= 0\n"
        "    except OSError:\n"
        "        return False\n"
        "os.write(4, data[::-1] + repr([fd for fd in range(3, 256) if is_open(fd)]).encode())\n")


def echo_through_fds(order: str) -> tuple[bytes, tuple[int, int]]:
    """Pipes made in ``order`` ("to child first" or "from child first"), the child started on them with
    ``spawn_with_fds``, b"ping" sent: what comes back, and the numbers of the child's two pipe ends here."""
    if order == "to child first":
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
    else:
        from_r, from_w = os.pipe()
        to_r, to_w = os.pipe()
    proc = spawn_with_fds([sys.executable, "-c", ECHO], {3: to_r, 4: from_w})
    os.close(to_r)
    os.close(from_w)
    os.write(to_w, b"ping")
    os.close(to_w)
    got = b""
    while chunk := os.read(from_r, 1 << 16):
        got += chunk
    os.close(from_r)
    assert proc.wait(timeout=30) == 0
    return got, (to_r, from_w)


@pytest.mark.parametrize("order,fresh_fds", [("to child first", (3, 6)), ("from child first", (5, 4))])
def test_pipe_fds_reach_the_child_as_3_and_4(order: str, fresh_fds: tuple[int, int]) -> None:
    """In this process (where fds 3-6 are taken) and in a fresh interpreter, whose pipes are fds 3-6: the
    child's ends there are 3 and 6, or 5 and 4, the cases in which moving each onto 3 or 4 and then closing
    the original closed a descriptor just put in place (chromium: "Remote debugging pipe file descriptors
    are not open")."""
    assert echo_through_fds(order)[0] == b"gnip[3, 4]"
    fresh = ("from __future__ import annotations\nimport fcntl, os, subprocess, sys\nfrom typing import Any\n"
             f"{inspect.getsource(spawn_with_fds)}\n{inspect.getsource(echo_through_fds)}\n"
             f"ECHO = {ECHO!r}\n"
             f"print(repr(echo_through_fds({order!r})))\n")
    done = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr((b"gnip[3, 4]", fresh_fds))
