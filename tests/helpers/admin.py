"""Calls to a running gateway's admin API, for tests (stdlib urllib: synchronous,
usable from sync and async tests alike)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def admin(url: str, master: str, method: str, path: str, body: Any = None) -> Any:
    status, got = call(url, master, method, path, body)
    if status >= 400:
        raise AssertionError(f"{method} {path} -> {status}: {got}")
    return got


def call(url: str, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request with `key` as the bearer token."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data, method=method, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def create_key(url: str, master: str, **settings: Any) -> tuple[str, dict[str, Any]]:
    """A new virtual key: (its secret, its public record)."""
    got = admin(url, master, "POST", "/admin/keys", settings)
    return got["key"], got["record"]


def ledger_rows(url: str, master: str) -> list[dict[str, Any]]:
    """Every row, page after page."""
    rows: list[dict[str, Any]] = []
    path = "/admin/ledger?limit=10000"
    while True:
        page = admin(url, master, "GET", path)
        rows += page["data"]
        if page["next"] is None:
            return rows
        path = "/admin/ledger?limit=10000&" + urllib.parse.urlencode({"after": page["next"]})
