"""Raw HTTP to a running gateway (stdlib http.client): any method, path, headers and
bytes, for what the SDKs will not send. Synchronous, so Hypothesis can drive it."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection; reopened after an error (the server may close it)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            r = self._conn.getresponse()
            data = r.read()
        except BaseException:
            self.close()
            raise
        if r.will_close:
            self.close()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def request(url: str, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
    """One request; a `body` that is not bytes is sent as JSON (json.dumps: orjson will
    not encode past 255 levels, and some tests need deeper)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    h = {"content-type": "application/json", **(headers or {})}
    conn = Connection(url, timeout)
    try:
        return conn.request(method, path, data, h)
    finally:
        conn.close()
