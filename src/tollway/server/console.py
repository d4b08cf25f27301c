"""The console's files: `/` (its page) and `/console/…` (ES modules, CSS, an icon),
shipped as package data (`tollway/console/`) and served from memory.

There is nothing to build and nothing fetched at run time: the files are plain ES
modules and CSS, read once at start-up. Every answer carries a strict
Content-Security-Policy (this origin only: no inline script or style, no other site,
no framing), `nosniff`, and an ETag with `no-cache`, so a browser revalidates each
file and gets a 304 while it is unchanged — a new release is seen at once, without
fingerprinted names.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from tollway.errors import MethodNotAllowed, NotFound
from tollway.server.asgi import Headers, Receive, Scope, Send, edge, send_error

TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
         ".css": b"text/css; charset=utf-8", ".svg": b"image/svg+xml"}
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# What every console answer carries (its API's JSON answers too: server/console_session.py).
SECURITY_HEADERS: Headers = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
INDEX = "index.html"


class _File:
    __slots__ = ("body", "etag", "type")

    def __init__(self, name: str, body: bytes) -> None:
        self.body = body
        self.type = TYPES[name[name.rindex("."):]]
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'


def load() -> dict[str, _File]:
    """Every file of the console, by name (flat: the console has no folders)."""
    folder = resources.files("tollway") / "console"
    return {f.name: _File(f.name, f.read_bytes()) for f in folder.iterdir()
            if f.is_file() and "." in f.name and f.name[f.name.rindex("."):] in TYPES}


class ConsoleFiles:
    """GET/HEAD of one file: `/` is the page, `/console/NAME` any other file."""

    def __init__(self, files: dict[str, _File], *, index: bool = False) -> None:
        self.files = files
        self.index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid: Headers = [(b"x-request-id", edge(scope).request_id.encode())]
        name = INDEX if self.index else scope["path_params"]["path"]
        found = self.files.get(name)
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, MethodNotAllowed(
                f"{scope['method']} is not allowed on {scope['path']}; use GET."),
                [*rid, (b"allow", b"GET, HEAD")])
            return
        if found is None:
            await send_error(send, NotFound(f"The console has no file '{name[:100]}'."), rid)
            return
        headers = [*rid, *SECURITY_HEADERS, (b"cache-control", b"no-cache"),
                   (b"etag", found.etag)]
        if _matches(scope, found.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            *headers, (b"content-type", found.type),
            (b"content-length", str(len(found.body)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else found.body})


def _matches(scope: Scope, etag: bytes) -> bool:
    for k, v in scope["headers"]:
        if k == b"if-none-match":
            return etag in (t.strip() for t in bytes(v).split(b","))
    return False
