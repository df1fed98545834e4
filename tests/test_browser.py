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
import fcntl
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="liif serve needs FastAPI: pip install 'liif[serve]'")
pytest.importorskip("uvicorn", reason="liif serve needs uvicorn")

from conftest import DATA, serve_in_thread  # noqa: E402
from liif.serve.app import create_app  # noqa: E402
from liif.serve.images import bicubic_window  # noqa: E402
from liif.serve.limits import Limits  # noqa: E402

CHROMIUM = os.environ.get("LIIF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# CSS pixels of the browser window (device scale factor 1); larger when keeping the screenshot
VIEW = (1100, 640) if os.environ.get("LIIF_VIEWER_SCREENSHOT") else (760, 460)
IMAGE = DATA / "Set14" / "LR_bicubic" / "X4" / "img_011.png"  # 192x128

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (CI runs `apt-get install -y chromium`; it failed or was skipped)")


def spawn_with_fds(argv: list[str], fds: dict[int, int], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with this process's file descriptor ``fds[n]`` as its descriptor ``n`` (3 <= n <= 9),
    whatever numbers this process's descriptors have (a fresh process's pipes land on 3-6 themselves).

    Each source is first duplicated to a number of 10 or more, so that no move onto 3-9 can overwrite a
    source not yet moved, nor close one that is already in place; bash (dash reads single-digit
    descriptors only) then moves them into place, closes the copies and execs ``argv``."""
    assert all(3 <= n <= 9 for n in fds), fds
    high = {n: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for n, fd in fds.items()}
    try:
        moves = " ".join(f"{n}<&{fd} {fd}<&-" for n, fd in high.items())
        return subprocess.Popen(["bash", "-c", f'exec "$0" "$@" {moves}', *argv], pass_fds=tuple(high.values()),
                                **popen)
    finally:
        for fd in high.values():
            os.close(fd)


class Chromium:
    """A headless Chromium and a minimal DevTools-protocol client on its debugging pipe."""

    def __init__(self, exe: str, profile: Path, size: tuple[int, int], log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                "--force-device-scale-factor=1", "--remote-debugging-pipe", "about:blank"]
        self._log = open(log, "wb")
        # --remote-debugging-pipe: the browser reads fd 3 and writes fd 4
        self.proc = spawn_with_fds(argv, {3: to_browser_r, 4: from_browser_w},
                                   stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "browser pipe closed"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._next not in self._replies:
                if -1 in self._replies:
                    raise RuntimeError(f"{method}: {self._replies[-1]['error']['message']}")
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to {method} within {timeout} s"
                self._cond.wait(left)
            reply = self._replies.pop(self._next)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()


class Page:
    def __init__(self, browser: Chromium, size: tuple[int, int]) -> None:
        self.b = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        return self.b.send(method, params, self.session, timeout)

    def eval(self, expr: str, timeout: float = 60) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                      timeout)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expr)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expr}; status: " + str(
                self.eval("document.getElementById('status') && document.getElementById('status').textContent"))
            time.sleep(0.1)

    def mouse(self, kind: str, x: float, y: float, **extra: Any) -> None:
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})

    def click(self, selector: str) -> None:
        box = self.eval(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                        f" return [r.left + r.width / 2, r.top + r.height / 2]; }})()")
        self.mouse("mouseMoved", *box)
        self.mouse("mousePressed", *box, button="left", clickCount=1)
        self.mouse("mouseReleased", *box, button="left", clickCount=1)

    def canvas_pixels(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        b64 = self.eval(f"""(() => {{
            const d = document.getElementById('view').getContext('2d').getImageData({x}, {y}, {w}, {h}).data;
            let s = '';
            for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode(...d.subarray(i, i + 0x8000));
            return btoa(s); }})()""")
        return np.frombuffer(base64.b64decode(b64), dtype=np.uint8).reshape(h, w, 4)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    b = Chromium(CHROMIUM, tmp / "profile", VIEW, tmp / "chromium.log")  # type: ignore[arg-type]
    try:
        b.send("Browser.getVersion", timeout=60)
    except (RuntimeError, AssertionError) as e:
        b.close()
        pytest.fail(f"chromium did not start: {e}\n{(tmp / 'chromium.log').read_text(errors='replace')[-2000:]}")
    yield b
    b.close()


def sharp_state(page: Page) -> dict[str, Any]:
    """Wait until the viewer shows the final LIIF render of its current view; return its state."""
    return page.wait_for("""(() => { const s = window.liifViewer.state();
        const g = s.geometry, l = s.liif;
        return s.sharp && l && l.W === g.W && l.H === g.H && l.region.join() === [g.x, g.y, g.w, g.h].join()
            ? s : null; })()""")


@needs_chromium
def test_viewer_zoom_shows_region_render(browser, upscaler, tmp_path):
    # 1 worker and a small queue: the page must cope with 503s while it zooms
    app = create_app(upscaler, IMAGE.parent, Limits(workers=1, queue=2))
    src = Image.open(IMAGE).convert("RGB")
    with serve_in_thread(app) as base:
        page = Page(browser, VIEW)
        page.send("Page.enable")
        page.send("Page.navigate", {"url": base + "/"})
        page.wait_for("window.liifViewer && window.liifViewer.ready", timeout=60)
        n_options = page.eval("document.getElementById('images').options.length")
        assert n_options == 1 + len(list(IMAGE.parent.glob("*.png")))

        # open an image the way a person does: the upload control
        doc = page.send("DOM.getDocument")["root"]["nodeId"]
        node = page.send("DOM.querySelector", {"nodeId": doc, "selector": "#upload"})["nodeId"]
        page.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(IMAGE)]})
        first = page.wait_for("window.liifViewer.state().image && window.liifViewer.state()")
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

        # the pixels on screen are the API's region render of exactly that window, band by band
        shown = page.canvas_pixels(g["ox"] + g["x"], g["oy"] + g["y"], g["w"], g["h"])
        assert (shown[..., 3] == 255).all()
        for bx, by, bw, bh in state["liif"]["bands"]:
            want = np.asarray(upscaler.upscale(src, size=(g["H"], g["W"]), region=(bx, by, bw, bh)))
            band = shown[by - g["y"]:by - g["y"] + bh, bx - g["x"]:bx - g["x"] + bw, :3]
            assert np.array_equal(band, want), f"band {(bx, by, bw, bh)}: {np.abs(band.astype(int) - want).max()}"
        # and differs from the plain bicubic view of the same window (it is not a resized preview)
        page.eval("(() => { const m = document.getElementById('mode'); m.value = 'split';"
                  " m.dispatchEvent(new Event('change')); })()")
        page.wait_for("window.liifViewer.state().sharp")
        shot = base64.b64decode(page.send("Page.captureScreenshot", {"format": "png"})["data"])
        split = page.canvas_pixels(g["ox"] + g["x"], g["oy"] + g["y"], g["w"], g["h"])[..., :3].astype(int)
        cut = g["w"] // 2
        bicubic = np.zeros_like(split)  # the bicubic view comes in the same bands, each a Pillow box resize
        for bx, by, bw, bh in state["liif"]["bands"]:
            bicubic[by - g["y"]:by - g["y"] + bh, bx - g["x"]:bx - g["x"] + bw] = np.asarray(
                bicubic_window(src, (g["H"], g["W"]), (bx, by, bw, bh)))
        right = slice(cut + 80, g["w"])  # right of the divider and its label
        assert np.array_equal(split[:, right], bicubic[:, right])
        full = np.asarray(src.resize((g["W"], g["H"]), Image.Resampling.BICUBIC))[
            g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]].astype(int)
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
