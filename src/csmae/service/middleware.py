"""Pure-ASGI middlewares: a Host-header guard, a request-body size limit and security headers."""

from __future__ import annotations

import json
from typing import Any

#: Content-Security-Policy of the page and API: nothing is loaded from outside the server.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def host_of(header: str) -> str:
    """The host name of a Host header, without port or IPv6 brackets (``[::1]:8000`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuardMiddleware:
    """Answer only requests whose Host header names an allowed host (a DNS-rebinding guard).

    Unlike Starlette's ``TrustedHostMiddleware`` it understands bracketed IPv6 hosts
    (``[::1]:8000``) and refuses with a JSON 400 like every other client error. ``allowed_hosts``
    are exact names/addresses, or ``*.domain`` for any subdomain.
    """

    def __init__(self, app: Any, *, allowed_hosts: tuple[str, ...] | list[str]):
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}
        self.suffixes = tuple(h[1:] for h in self.allowed if h.startswith("*."))

    def allows(self, header: str) -> bool:
        host = host_of(header)
        return host in self.allowed or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"host", b"").decode("latin-1")
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        shown = "".join(ch for ch in header if ch.isprintable())[:100]
        await _send_json(send, 400, f"Host header {shown!r} is not allowed; this server answers to "
                                    f"{', '.join(sorted(self.allowed))} (see csmae serve --host)")


class BodyLimitMiddleware:
    """Reject request bodies over a size limit with 413 before the app parses them.

    Bodies are read (up to the limit) and replayed to the app, so chunked uploads without a
    Content-Length are bounded too.
    """

    def __init__(self, app: Any, *, max_bytes: int, upload_max_bytes: int, upload_prefix: str):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes
        self.upload_prefix = upload_prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.upload_max_bytes if scope["path"].startswith(self.upload_prefix) else self.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if declared > limit:
                await _send_json(send, 413, f"request body too large: {declared} bytes, limit {limit} bytes")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, f"request body too large: over {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send: Any, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": payload})


class SecurityHeadersMiddleware:
    """Add no-sniff, no-framing, no-referrer and (outside the FastAPI docs pages) a strict CSP."""

    def __init__(self, app: Any, *, csp_exempt: tuple[str, ...] = ("/docs", "/redoc"),
                 img_origins: tuple[str, ...] = ()):
        self.app = app
        self.csp_exempt = csp_exempt
        # extra image origins (a base-map tile server chosen with ``csmae serve --basemap``)
        self.csp = CSP.replace("img-src 'self'", " ".join(("img-src 'self'", *img_origins)))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exempt = scope["path"].startswith(self.csp_exempt)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if not exempt:
                    headers.append((b"content-security-policy", self.csp.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
