"""The viewer's access log (ASGI middleware): one line per request, after its answer is sent, on
the ``liif.serve`` logger: method, path and query, status, bytes sent and milliseconds taken.
``liif serve`` prints those lines on stderr; a request the client left before any answer logs 499."""
from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger("liif.serve")


class AccessLog:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, sent = 499, 0

        async def counting(msg: Message) -> None:
            nonlocal status, sent
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            elif msg["type"] == "http.response.body":
                sent += len(msg.get("body", b""))
            await send(msg)

        try:
            await self.app(scope, receive, counting)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            log.info("%s %s %d %dB %.0fms", scope["method"], target, status, sent,
                     (time.perf_counter() - t0) * 1000)


def log_to_stderr() -> None:
    """``liif serve``: the access lines on stderr, one per request."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


__all__ = ["AccessLog", "log_to_stderr"]
