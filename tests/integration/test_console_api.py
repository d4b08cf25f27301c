"""The console's server side, over HTTP: its files and their security headers, signing
in and out (the session cookie, what it stands for), the session accepted in place of
a key only with the console's header, a revoked key's session refused, the admin API
refused to a virtual key's session, and a stopped request's ledger row read back by
its own caller alone. (The pages themselves: tests/browser/.)"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import admin, create_key
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.raw import Reply, request
from tests.helpers.sim import SimHandle

MASTER = "master-" + secrets.token_hex(16)
CONSOLE = {"x-tollway-console": "1"}
CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def cgw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(gateway_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def sign_in(gw: GatewayHandle, key: str) -> tuple[Reply, dict[str, str]]:
    """Signs in; returns the answer and the headers that carry its session."""
    reply = request(gw.url, "POST", "/console/session", {"key": key}, CONSOLE)
    assert reply.status == 200, reply
    cookie = reply.headers["set-cookie"].split(";", 1)[0]
    return reply, {**CONSOLE, "cookie": cookie}


def test_the_page_and_its_files_are_served_with_strict_headers(cgw: GatewayHandle) -> None:
    page = request(cgw.url, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="/console/app.js">' in page.body
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in [("app.js", "text/javascript"), ("console.css", "text/css"),
                       ("icon.svg", "image/svg+xml")]:
        got = request(cgw.url, "GET", f"/console/{name}")
        assert got.status == 200 and got.headers["content-type"].startswith(kind), name
        assert got.headers["cache-control"] == "no-cache" and got.headers["etag"]
        again = request(cgw.url, "GET", f"/console/{name}",
                        headers={"if-none-match": got.headers["etag"]})
        assert again.status == 304 and again.body == b"", name
    assert request(cgw.url, "GET", "/console/nope.js").status == 404
    assert request(cgw.url, "GET", "/console/../pyproject.toml").status == 404
    assert request(cgw.url, "POST", "/console/app.js").status == 405


def test_signing_in_sets_an_http_only_strict_cookie_of_an_opaque_token(
        cgw: GatewayHandle) -> None:
    reply, session = sign_in(cgw, MASTER)
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the request came over plain http
    behind_tls = request(cgw.url, "POST", "/console/session", {"key": MASTER},
                         {**CONSOLE, "x-forwarded-proto": "https"})
    assert "; Secure" in behind_tls.headers["set-cookie"]
    token = session["cookie"].split("=", 1)[1]
    assert len(token) >= 40 and MASTER not in cookie
    assert reply.json() == {"signed_in": True, "role": "master", "key": None,
                            "open": False, "admin": True}
    assert request(cgw.url, "GET", "/console/session", headers=session).json()["role"] == "master"
    assert MASTER not in cgw.log()

    # Out: the cookie is cleared and the token no longer works.
    out = request(cgw.url, "DELETE", "/console/session", headers=session)
    assert out.status == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert not out.json()["signed_in"]
    assert request(cgw.url, "GET", "/admin/keys", headers=session).status == 401
    assert not request(cgw.url, "GET", "/console/session", headers=session).json()["signed_in"]


def test_a_wrong_key_opens_no_session(cgw: GatewayHandle) -> None:
    for key in ("tw-not-a-key", "wrong-master", ""):
        reply = request(cgw.url, "POST", "/console/session", {"key": key}, CONSOLE)
        assert reply.status == 401 and "set-cookie" not in reply.headers, key


def test_the_session_needs_the_console_header(cgw: GatewayHandle) -> None:
    _, session = sign_in(cgw, MASTER)
    cookie_only = {"cookie": session["cookie"]}
    assert request(cgw.url, "GET", "/admin/keys", headers=session).status == 200
    assert request(cgw.url, "GET", "/admin/keys", headers=cookie_only).status == 401
    assert request(cgw.url, "POST", "/v1/chat/completions", CHAT, cookie_only).status == 401
    assert request(cgw.url, "POST", "/v1/chat/completions", CHAT, session).status == 200
    # Signing in needs it too (no login CSRF from another site's form).
    refused = request(cgw.url, "POST", "/console/session", {"key": MASTER})
    assert refused.status == 403 and "set-cookie" not in refused.headers
    assert request(cgw.url, "GET", "/console/session", headers=cookie_only).status == 403


def test_a_virtual_keys_session_is_that_key_and_ends_when_it_is_revoked(
        cgw: GatewayHandle) -> None:
    secret, record = create_key(cgw.url, MASTER, name="console-bot", team="web")
    reply, session = sign_in(cgw, secret)
    assert reply.json()["role"] == "key"
    shown = reply.json()["key"]
    assert shown["id"] == record["id"] and shown["name"] == "console-bot"
    assert "hash" not in shown and secret not in reply.body.decode()

    chat = request(cgw.url, "POST", "/v1/chat/completions", CHAT, session)
    assert chat.status == 200
    # Not the admin API: neither the key list nor anyone's spend.
    for path in ("/admin/keys", "/admin/spend?by=key", "/admin/ledger"):
        got = request(cgw.url, "GET", path, headers=session)
        assert got.status == 403 and got.json()["error"]["code"] == "master_key_required", path
        by_key = request(cgw.url, "GET", path, headers={"authorization": f"Bearer {secret}"})
        assert by_key.status == 403, path
        assert by_key.json()["error"]["code"] == "master_key_required", path

    admin(cgw.url, MASTER, "POST", f"/admin/keys/{record['id']}/revoke")
    refused = request(cgw.url, "POST", "/v1/chat/completions", CHAT, session)
    assert refused.status == 401 and refused.json()["error"]["code"] == "key_refused"
    assert not request(cgw.url, "GET", "/console/session", headers=session).json()["signed_in"]


def test_a_request_s_ledger_row_is_read_back_by_its_own_caller_alone(
        cgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = create_key(cgw.url, MASTER, name="mine")
    other, _ = create_key(cgw.url, MASTER, name="theirs")
    _, mine = sign_in(cgw, secret)
    _, theirs = sign_in(cgw, other)
    rid = "console_" + secrets.token_hex(8)
    sent = time.time()
    assert request(cgw.url, "POST", "/v1/chat/completions", CHAT,
                   {**mine, "x-request-id": rid}).status == 200
    path = f"/console/requests/{rid}?at={sent:.3f}"
    row = request(cgw.url, "GET", path, headers=mine).json()["data"]
    assert row["request_id"] == rid and row["output_tokens"] == 16 and row["outcome"] == "ok"
    assert request(cgw.url, "GET", path, headers=theirs).json() == {"data": None}
    _, master = sign_in(cgw, MASTER)
    assert request(cgw.url, "GET", path, headers=master).json()["data"]["request_id"] == rid
    assert request(cgw.url, "GET", f"/console/requests/{rid}?at=soon",
                   headers=mine).status == 400


def test_an_open_gateway_says_so(sim: SimHandle) -> None:
    gw = start_gateway(gateway_config(sim.url))
    try:
        state = request(gw.url, "GET", "/console/session", headers=CONSOLE).json()
        assert state == {"signed_in": False, "role": None, "key": None, "open": True,
                         "admin": False}
        # With no master key there is nothing to sign in with but a virtual key.
        refused = request(gw.url, "POST", "/console/session", {"key": "anything"}, CONSOLE)
        assert refused.status == 400 and refused.json()["error"]["param"] == "key"
    finally:
        gw.stop()
