"""The dashboard API (/admin/dashboard/*) against a running gateway in front of the
simulator, on the embedded store and on PostgreSQL + Redis: after a mix of requests
(four keys and the master key, two models, users and features, a stream, a cache hit,
an upstream error, a budget refusal, an unknown model, a budget alert), every figure
each endpoint returns equals the same figure computed here from the rows of
/admin/ledger (tests/helpers/dashboard.py); a virtual key sees only its own lineage's
(and gets 403 on the key list and on other keys); a bad parameter is a 400 naming it."""

from __future__ import annotations

import asyncio
import calendar
import math
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import gateway_config
from tests.helpers import dashboard as ref
from tests.helpers.admin import call, create_key, ledger_rows
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.store.dashboard import BUCKETS, STACKS, bucket_start, next_bucket
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(8).hex()
REDIS_DB = "redis://127.0.0.1:6379/9"  # a database of its own, flushed around the module
PRICES = {"sim-model": {"input": 1.0, "output": 2.0},
          "claude-sim": {"input": 3.0, "output": 15.0}}
ASK: Any = [{"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 16


@dataclass
class Board:
    gw: GatewayHandle
    keys: dict[str, tuple[str, dict[str, Any]]]  # name -> (secret, record)
    rows: list[dict[str, Any]]  # every row of the ledger after the mix

    def get(self, path: str, auth: str = MASTER, **params: Any) -> Any:
        """GET /admin/dashboard/`path` with `auth` as the bearer; `params` the query."""
        status, body = self.call(path, auth, **params)
        assert status == 200, (path, params, body)
        return body

    def call(self, path: str, auth: str = MASTER, **params: Any) -> tuple[int, Any]:
        qs = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return call(self.gw.url, auth, "GET", f"/admin/dashboard/{path}"
                    + (f"?{qs}" if qs else ""))

    def lineage(self, name: str) -> str:
        return str(self.keys[name][1]["lineage"])

    def of(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["key_lineage"] == self.lineage(name)]


def config(sim: SimHandle) -> dict[str, Any]:
    cfg = gateway_config(sim.url)
    cfg["prices"] = PRICES
    cfg["cache"] = {"enabled": True}  # exact: the same request again is a hit
    cfg["routing"] = {"retry": {"max_attempts": 1}}  # an upstream 500 is answered at once
    cfg["budgets"] = {"global": [{"usd": 100}], "teams": {"red": [{"usd": 50, "period": "month"}]},
                      "users": {"ann": [{"tokens": 1_000_000, "period": "month"}],
                                "*": [{"usd": 5}]},
                      "features": {"search": [{"usd": 10, "period": "total"}]}}
    cfg["alerts"] = {"budget_thresholds": [0.5]}
    return cfg


def worst_usd() -> float:
    n_in = count_request(parse_chat_request(orjson.dumps({"model": "sim", "messages": ASK})),
                         "sim-model")
    return (n_in * 1.0 + MAX_TOKENS * 2.0) / 1e6


def mix(gw: GatewayHandle, sim: SimHandle, keys: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """The requests whose rows every test reads; each one's status as expected."""
    def client(name: str) -> openai.OpenAI:
        secret = MASTER if name == "master" else keys[name][0]
        return openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)

    def ask(name: str, status: int = 200, model: str = "sim", stream: bool = False,
            headers: dict[str, str] | None = None, text: str | None = None) -> None:
        messages = ASK if text is None else [{"role": "user", "content": text}]
        try:
            with client(name) as c:
                if stream:
                    for _ in c.chat.completions.create(
                            model=model, messages=messages, max_tokens=MAX_TOKENS, stream=True,
                            extra_headers=headers):
                        pass
                else:
                    c.chat.completions.create(model=model, messages=messages,
                                              max_tokens=MAX_TOKENS, extra_headers=headers)
            got = 200
        except openai.APIStatusError as e:
            got = e.status_code
        assert got == status, (name, model, got)

    ann, bob = {"x-tollway-user": "ann"}, {"x-tollway-user": "bob"}
    ask("a", stream=True, headers=ann, text="What is 2 + 2?")
    ask("a", headers=bob)
    ask("a", headers=bob)  # the same request again: a cache hit
    ask("b", model="sim-claude", text="Say hello.")
    ask("b", model="sim-claude", stream=True, headers={"x-tollway-user": "cy"},
        text="Say goodbye.")
    sim.config(next_faults=["500"])
    ask("b", status=502, text="This one fails upstream.")
    ask("c", status=429, text="Over my budget.")  # its budget cannot hold the worst case
    ask("d", text="Half my budget.")  # past 50% of its budget: an alert
    ask("master", headers={"x-tollway-feature": "ops"}, text="From the operator.")
    ask("a", status=404, model="no-such-model")


def start(sim: SimHandle, store: str, postgres: str | None) -> Board:
    cfg = config(sim)
    if store == "shared":
        cfg["store"] = {"redis_url": REDIS_DB, "postgres_url": postgres}
    gw = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        keys = {
            "a": create_key(gw.url, MASTER, name="search-bot", team="red", user="ann",
                            features=["search"], budgets=[{"usd": 1.0}]),
            "b": create_key(gw.url, MASTER, name="chat-bot", team="blue", features=["chat"]),
            "c": create_key(gw.url, MASTER, name="broke", budgets=[{"usd": 1e-9}]),
            "d": create_key(gw.url, MASTER, name="halfway",
                            budgets=[{"usd": 1.5 * worst_usd(), "period": "month"}]),
        }
        mix(gw, sim, keys)
        board = Board(gw, keys, ledger_rows(gw.url, MASTER))
        deadline = time.monotonic() + 10  # the alert is checked and kept in the background
        while not board.get("alerts")["data"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return board
    except BaseException:
        gw.stop()
        raise


async def flush_redis() -> None:
    r = aioredis.from_url(REDIS_DB)
    await r.flushdb()
    await r.aclose()


@pytest.fixture(scope="module", params=["embedded", "shared"])
def board(request: pytest.FixtureRequest, sim: SimHandle) -> Iterator[Board]:
    sim.reset()
    sim.config(ttft_ms=2, token_ms=1, output_tokens=MAX_TOKENS, next_faults=[], rate_500=0)
    if request.param == "embedded":
        b = start(sim, "embedded", None)
        try:
            yield b
        finally:
            b.gw.stop()
        return
    asyncio.run(flush_redis())
    with scratch_database("tollway_dashboard") as name:
        b = start(sim, "shared", url_of(name))
        try:
            yield b
        finally:
            b.gw.stop()
            asyncio.run(flush_redis())


def test_the_mix_has_what_the_figures_are_about(board: Board) -> None:
    outcomes = [r["outcome"] for r in board.rows]
    assert len(board.rows) == 10
    assert outcomes.count("error") == 1 and outcomes.count("refused") == 2
    assert [r["cache"] for r in board.rows].count("hit") == 1
    assert sum(r["ttft_ms"] is not None for r in board.rows) >= 2
    assert {r["key_lineage"] for r in board.rows} == {
        *(board.lineage(k) for k in "abcd"), "master"}


def check_series(got: dict[str, Any], rows: list[dict[str, Any]], bucket: Any,
                 stack: str) -> None:
    """The series has every bucket of the window in order (empty ones too), each
    group's dollars and requests as the rows say, and the total."""
    ts, t = [], bucket_start(got["since"], bucket)
    while t < got["until"]:
        ts.append(t)
        t = next_bucket(t, bucket)
    assert [p["t"] for p in got["series"]] == ts
    flat = {(p["t"], g["name"]): (g["cost_usd"], g["requests"])
            for p in got["series"] for g in p["groups"]}
    assert sum(len(p["groups"]) for p in got["series"]) == len(flat)
    ref.same(flat, ref.spend(rows, bucket, stack), f"{bucket} {stack}")
    ref.same(got["total"], {"cost_usd": math.fsum(r["cost_usd"] for r in rows),
                            "requests": len(rows)})


def test_spend_per_bucket_and_group_equals_the_rows(board: Board) -> None:
    for bucket in BUCKETS:
        for stack in STACKS:
            got = board.get("spend", bucket=bucket, stack=stack)
            assert (got["bucket"], got["stack"], got["key"]) == (bucket, stack, None)
            assert got["until"] - got["since"] == 86400  # the last 24 hours by default
            check_series(got, board.rows, bucket, stack)
    # A window that leaves out the first rows (an ISO datetime, as /admin/spend reads it).
    since = sorted(r["ts"] for r in board.rows)[4]
    iso = datetime.fromtimestamp(since, UTC).isoformat()  # to the microsecond
    later = [r for r in board.rows if r["ts"] >= board.get("spend", since=iso)["since"]]
    assert 4 <= len(board.rows) - len(later) <= 5
    check_series(board.get("spend", since=iso, stack="model"), later, "hour", "model")


def test_a_series_names_the_groups_asked_for_and_sums_the_rest(board: Board) -> None:
    got = board.get("spend", stack="user", groups="1")
    first = ref.top(board.rows, "user", 1)[0][0]
    others = [g for p in got["series"] for g in p["groups"] if g["name"] != first]
    assert others and all(g == {**g, "name": "(other)", "other": True} for g in others)
    ref.same(math.fsum(g["cost_usd"] for g in others),
             math.fsum(r["cost_usd"] for r in board.rows if (r["user"] or "(none)") != first))
    ref.same(got["total"], board.get("spend", stack="user")["total"])


def test_stats_equal_the_rows(board: Board) -> None:
    got = board.get("stats")
    ref.same(got, ref.stats(board.rows))
    assert got["errors"] == 3 and got["cache"]["hits"] == 1  # error, refused x2; the hit
    since = sorted(r["ts"] for r in board.rows)[3]
    ref.same(board.get("stats", since=repr(since)),
             ref.stats([r for r in board.rows if r["ts"] >= since]))
    ref.same(board.get("stats", key=board.lineage("b")), ref.stats(board.of("b")))


def tail(board: Board, auth: str = MASTER, **params: Any) -> list[dict[str, Any]]:
    """Every row the tail shows, two a page."""
    got: list[dict[str, Any]] = []
    before = None
    while True:
        page = board.get("tail", auth, limit=2, before=before, **params)
        got += page["data"]
        if page["next"] is None:
            return got
        before = page["next"]


@pytest.mark.parametrize("only", [
    {}, {"model": "sim-model"}, {"model": "claude-sim"}, {"model": "no-such-model"},
    {"status": "error"}, {"status": "ok"}, {"key": "b"}, {"key": "master", "status": "ok"},
    {"key": "a", "model": "sim-model", "status": "ok"}])
def test_the_tail_pages_newest_first(board: Board, only: dict[str, str]) -> None:
    params = {**only, **({"key": board.lineage(only["key"])} if only.get("key") in board.keys
                         else {})}
    want = [r for r in board.rows
            if params.get("model") in (None, ref.LABELS["model"](r))
            and params.get("key") in (None, ref.LABELS["key"](r))
            and params.get("status") in (None, "error" if ref.failed(r) else "ok")]
    want.sort(key=lambda r: (r["ts"], r["id"]), reverse=True)
    assert want
    assert tail(board, **params) == want


def test_budgets_are_their_counters_as_the_rows_charged_them(board: Board) -> None:
    now = time.time()
    t = time.gmtime(now)
    day = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    resets = {"day": day + 86400, "month": calendar.timegm((year, month, 1, 0, 0, 0)),
              "total": None}

    def used(rows: list[dict[str, Any]], metric: str) -> float:
        return math.fsum(r["cost_usd"] if metric == "usd"
                         else r["input_tokens"] + r["output_tokens"] for r in rows)

    def entry(scope: str, name: str, period: str, metric: str, limit: float,
              rows: list[dict[str, Any]]) -> dict[str, Any]:
        u = used(rows, metric)
        return {"scope": scope, "name": name, "period": period, "metric": metric,
                "limit": limit, "used": u, "remaining": max(limit - u, 0.0),
                "resets_at": resets[period]}

    rows = board.rows
    keyed = [entry("key", board.lineage(k), "day" if k != "d" else "month", "usd",
                   board.keys[k][1]["budgets"][0]["usd"], board.of(k)) for k in "acd"]
    ref.same(board.get("budgets"), [
        entry("global", "", "day", "usd", 100.0, rows),
        entry("team", "red", "month", "usd", 50.0, [r for r in rows if r["team"] == "red"]),
        entry("user", "ann", "month", "tokens", 1e6, [r for r in rows if r["user"] == "ann"]),
        entry("feature", "search", "total", "usd", 10.0,
              [r for r in rows if r["feature"] == "search"]),
        *sorted(keyed, key=lambda e: e["name"])])
    assert keyed[2]["used"] > 0.5 * keyed[2]["limit"]  # key d past its alert threshold
    ref.same(board.get("budgets", board.keys["a"][0]), [keyed[0]])  # a virtual key: its own


def test_the_alerts_that_fired_are_listed(board: Board) -> None:
    d = board.lineage("d")
    fired = board.get("alerts")["data"]
    assert [(a["rule"], a["scope"], a["name"]) for a in fired] == [("budget", "key", d)]
    a = fired[0]
    assert "50%" in a["message"] and d in a["message"]
    assert a["detail"]["threshold"] == 0.5
    ref.same(a["detail"]["level"], math.fsum(r["cost_usd"] for r in board.of("d")))
    first = min(r["ts"] for r in board.of("d"))
    assert first <= a["at"] <= time.time()
    assert board.get("alerts", board.keys["d"][0])["data"] == fired
    assert board.get("alerts", board.keys["a"][0])["data"] == []
    assert board.get("alerts", since=repr(a["at"] + 1e-3))["data"] == []


def test_a_virtual_key_sees_only_its_own_lineage(board: Board) -> None:
    secret, rec = board.keys["a"]
    mine = board.of("a")
    ref.same(board.get("stats", secret), {**ref.stats(mine), "key": rec["lineage"]})
    for stack in ("key", "user", "model"):
        got = board.get("spend", secret, stack=stack, bucket="day")
        check_series(got, mine, "day", stack)
    assert {g["name"] for p in board.get("spend", secret, stack="key")["series"]
            for g in p["groups"]} == {rec["lineage"]}
    assert tail(board, secret) == sorted(mine, key=lambda r: (r["ts"], r["id"]), reverse=True)
    assert board.get("tail", secret, key=rec["lineage"])["data"]
    for path, params in [("stats", {"key": board.lineage("b")}),
                         ("tail", {"key": board.lineage("b")}),
                         ("spend", {"key": "master"})]:
        status, body = board.call(path, secret, **params)
        assert status == 403 and body["error"]["param"] == "key", (path, body)
    for path in ("/admin/keys", f"/admin/keys/{board.keys['b'][1]['id']}", "/admin/spend",
                 "/admin/ledger"):
        status, body = call(board.gw.url, secret, "GET", path)
        assert status == 403 and body["error"]["type"] == "permission_error", (path, body)
        assert "/admin/dashboard" in body["error"]["message"]
    status, body = board.call("stats", "tw-not-a-key")
    assert status == 401


@pytest.mark.parametrize(("path", "params", "param"), [
    ("spend", {"bucket": "week"}, "bucket"),
    ("spend", {"stack": "colour"}, "stack"),
    ("spend", {"bucket": "hour", "since": "0"}, "bucket"),  # 490,000 hours
    ("spend", {"since": "yesterday"}, "since"),
    ("spend", {"groups": "0"}, "groups"),
    ("spend", {"groups": "1001"}, "groups"),
    ("stats", {"until": "2026-13-01"}, "until"),
    ("stats", {"since": "2026-11-02", "until": "2026-11-01"}, "until"),
    ("stats", {"since": str(int(time.time()) + 86400 * 400)}, "since"),  # after now
    ("stats", {"top": "5"}, "top"),
    ("tail", {"limit": "0"}, "limit"),
    ("tail", {"limit": "1001"}, "limit"),
    ("tail", {"status": "maybe"}, "status"),
    ("tail", {"before": "yesterday"}, "before"),
    ("budgets", {"since": "2026-11-01"}, "since"),
    ("alerts", {"limit": "x"}, "limit"),
])
def test_a_bad_parameter_is_a_400_naming_it(board: Board, path: str, params: dict[str, str],
                                            param: str) -> None:
    status, body = board.call(path, **params)
    assert status == 400, body
    assert body["error"]["param"] == param and body["error"]["message"].startswith(param)
