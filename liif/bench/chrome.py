"""A headless Chromium driven over the DevTools protocol on a pipe, for the viewer's browser test and
``liif bench viewer``.

``--remote-debugging-pipe``: JSON messages separated by NUL on the browser's file descriptors 3 and
4, so no driver package or browser download is needed (Debian's ``chromium`` is enough).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def find_chromium() -> str | None:
    """``LIIF_CHROMIUM``, else chromium or chromium-browser on the PATH."""
    return os.environ.get("LIIF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def spawn_with_fds(argv: list[str], fds: dict[int, int], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with this process's file descriptor ``fds[n]`` as its descriptor ``n`` (3 <= n <= 9),
    whatever numbers this process's descriptors have (a fresh process's pipes land on 3-6 themselves).

    Each source is first duplicated to a number of 10 or more, so that no move onto 3-9 can overwrite a
    source not yet moved, nor close one that is already in place; bash (dash reads single-digit
    descriptors only) then moves them into place, closes the copies and execs ``argv``."""
    if not all(3 <= n <= 9 for n in fds):
        raise ValueError(f"descriptors must be 3..9, got {sorted(fds)}")
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
                if left <= 0:
                    raise TimeoutError(f"no answer to {method} within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(self._next)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
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
            if time.monotonic() > deadline:
                status = self.eval("document.getElementById('status') && document.getElementById('status').textContent")
                raise TimeoutError(f"timed out waiting for {expr}; status: {status}")
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


__all__ = ["Chromium", "Page", "find_chromium", "spawn_with_fds"]
