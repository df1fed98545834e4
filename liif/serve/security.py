"""The viewer's HTTP guards (ASGI middleware): :class:`BodyLimit` answers 413 to an upload body
over the limit, announced or streamed; :class:`Guard` answers only requests that name an allowed
host (against DNS rebinding), refuses cross-origin state-changing requests and cross-site requests
that start work (decodes, renders), and adds the security headers (CSP and friends) to every
answer."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # always allowed in the Host header
WILDCARD_BINDS = {"", "0.0.0.0", "::"}  # bind addresses that are no host name a browser uses
# The page is one HTML file, one script and one style sheet (no inline code); images arrive as blobs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(k.encode(), v.encode()) for k, v in (
    ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"), ("Cross-Origin-Resource-Policy", "same-origin"))]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: request bodies on ``paths`` above ``limit`` bytes get 413, whether the size
    is announced (Content-Length) or only found while streaming."""

    def __init__(self, app: Any, limit: int, paths: tuple[str, ...]) -> None:
        self.app, self.limit, self.paths = app, limit, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = JSONResponse({"detail": f"upload larger than {self.limit:,} bytes"}, status_code=413)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_large(scope, receive, send)
            return
        seen, exceeded = 0, False

        async def limited() -> Message:
            nonlocal seen, exceeded
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise _TooLarge
            return msg

        async def unless_exceeded(msg: Message) -> None:
            if not exceeded:  # the app's own answer to the cut-off body (FastAPI says 400) is dropped
                await send(msg)

        try:
            await self.app(scope, limited, unless_exceeded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await too_large(scope, receive, send)


_NETLOC = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
WORK_PATHS = {"/api/source", "/api/render", "/api/download"}  # GETs that start a decode or a render
SAME_ORIGIN = {b"same-origin", b"none"}  # Sec-Fetch-Site values of the page itself, or of a typed URL
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(netloc: str) -> str | None:
    """``name[:port]`` or ``[v6]:port`` -> the lowercase name without brackets; None if malformed."""
    m = _NETLOC.fullmatch(netloc)
    return m.group(1).strip("[]").lower() if m else None


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` (an Origin header, ``scheme://name[:port]``) names this ``host`` (the Host
    header): the same name and the same port, a missing port being the origin scheme's default."""
    parts = urlsplit(origin)
    o, h = _NETLOC.fullmatch(parts.netloc), _NETLOC.fullmatch(host)
    if parts.scheme not in DEFAULT_PORTS or o is None or h is None:
        return False
    default = DEFAULT_PORTS[parts.scheme]
    ports = [int(m.group(2)[1:]) if m.group(2) else default for m in (o, h)]
    return host_name(parts.netloc) == host_name(host) and ports[0] == ports[1]


def allowed_hosts(bind: str = "127.0.0.1", extra: Iterable[str] = ()) -> list[str]:
    """Host names the server answers to: this machine's names, the bind address (unless it is a
    wildcard such as 0.0.0.0) and ``extra`` (``--allow-host``; ``*`` allows any)."""
    names = [*LOCAL_HOSTS, *([] if bind in WILDCARD_BINDS else [bind]), *extra]
    return list(dict.fromkeys(n.strip("[]").lower() for n in names))


class Guard:
    """ASGI middleware against DNS rebinding and cross-site use: the Host header must name an
    allowed host (else 400); a state-changing request (POST...) from another origin gets 403, and
    so does a GET of :data:`WORK_PATHS` that the browser marks as coming from another site; every
    answer carries :data:`SECURITY_HEADERS`."""

    def __init__(self, app: Any, hosts: Iterable[str]) -> None:
        self.app, self.hosts = app, set(hosts)

    def allowed(self, name: str | None) -> bool:
        return name is not None and ("*" in self.hosts or name in self.hosts)

    def refusal(self, method: str, path: str, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.allowed(host_name(host)):
            return 400, f"unknown host {host[:100]!r}; start the server with --allow-host NAME to use this name"
        site = headers.get(b"sec-fetch-site")
        if method in SAFE_METHODS:  # a link or an <img> of another site must not start renders either
            if path in WORK_PATHS and site is not None and site not in SAME_ORIGIN:
                return 403, "cross-site request refused"
            return None
        origin = headers.get(b"origin")
        if origin is not None:
            parts = urlsplit(origin.decode("latin-1"))
            if parts.scheme not in DEFAULT_PORTS or not self.allowed(host_name(parts.netloc)):
                return 403, "cross-origin request refused"
            # without Sec-Fetch-Site (older browsers) only the Origin tells another port of this host
            if site is None and not same_origin(origin.decode("latin-1"), host):
                return 403, "cross-origin request refused"
        if site is not None and site not in SAME_ORIGIN:
            return 403, "cross-site request refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *SECURITY_HEADERS]}
            await send(msg)

        refused = self.refusal(scope["method"], scope["path"], dict(scope.get("headers") or []))
        if refused is not None:
            await JSONResponse({"detail": refused[1]}, status_code=refused[0])(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


__all__ = ["BodyLimit", "Guard", "SAFE_METHODS", "SECURITY_HEADERS", "WORK_PATHS", "allowed_hosts", "host_name",
           "same_origin"]
