"""The admin API and `tollway keys` / `tollway spend` against a real gateway (with a
master key) in front of the simulator; chat calls with the created keys go through
the official OpenAI SDK."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import openai
import orjson
import pytest
import yaml

from tests.conftest import gateway_config
from tests.helpers.gateway import GatewayHandle, free_port, start_gateway, wait_http
from tests.helpers.sim import SimHandle
from tollway.keys import hash_secret

MASTER = "master-" + secrets.token_hex(16)
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per 1M tokens of sim-model


@pytest.fixture(scope="module")
def agw(sim: SimHandle) -> Iterator[GatewayHandle]:
    config = gateway_config(sim.url)
    config["prices"] = {"sim-model": {"input": PRICE_IN, "output": PRICE_OUT}}
    handle = start_gateway(config, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = self.body["error"]
        assert set(err) == {"message", "type", "param", "code"}  # the OpenAI shape
        return err


def admin(gw: GatewayHandle, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None, raw: bytes | None = None) -> Answer:
    data = raw if raw is not None else None if body is None else orjson.dumps(body)
    h = {"Authorization": f"Bearer {MASTER}"} if headers is None else headers
    req = urllib.request.Request(gw.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **h})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Answer(r.status, orjson.loads(r.read()), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Answer(e.code, orjson.loads(e.read()), dict(e.headers))


def new_key(gw: GatewayHandle, **settings: Any) -> tuple[str, dict[str, Any]]:
    a = admin(gw, "POST", "/admin/keys", settings)
    assert a.status == 201, a.body
    return a.body["key"], a.body["record"]


def sdk(gw: GatewayHandle, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


async def chat(gw: GatewayHandle, key: str, text: str = "hello",
               feature: str | None = None, rid: str | None = None) -> Any:
    headers = {"x-tollway-feature": feature} if feature else {}
    if rid:
        headers["x-request-id"] = rid
    return await sdk(gw, key).chat.completions.create(
        model="sim", messages=[{"role": "user", "content": text}], extra_headers=headers)


async def refused(gw: GatewayHandle, key: str) -> openai.AuthenticationError:
    with pytest.raises(openai.AuthenticationError) as e:
        await chat(gw, key)
    return e.value


def cli(gw: GatewayHandle, *argv: str, master: str = MASTER) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update(TOLLWAY_URL=gw.url, TOLLWAY_MASTER_KEY=master)
    return subprocess.run([sys.executable, "-m", "tollway.cli", *argv], capture_output=True,
                          text=True, timeout=60, env=env)


# --- keys ------------------------------------------------------------------------------

async def test_a_created_key_works_and_its_secret_is_shown_once(
        agw: GatewayHandle, fresh_sim: SimHandle) -> None:
    a = admin(agw, "POST", "/admin/keys", {"name": "first", "team": "search",
                                           "features": ["chat"]})
    assert a.status == 201
    assert a.headers["cache-control"] == "no-store"
    secret, rec = a.body["key"], a.body["record"]
    assert secret.startswith("tw-") and rec["id"].startswith("key_")
    assert rec["hint"] == f"{secret[:6]}…{secret[-4:]}"
    assert (rec["name"], rec["team"], rec["lineage"], rec["status"]) == (
        "first", "search", rec["id"], "active")
    assert "hash" not in rec

    r = await chat(agw, secret)
    assert r.choices[0].message.content

    shown = admin(agw, "GET", f"/admin/keys/{rec['id']}")
    assert shown.status == 200 and shown.body == rec
    # Keys are required once a master key is set: no key, or not a tw- key, is refused.
    err = await refused(agw, "not-a-tollway-key")
    assert err.status_code == 401


async def test_listing_never_shows_secrets_or_hashes(agw: GatewayHandle) -> None:
    made = [new_key(agw, name=f"list-{i}") for i in range(2)]
    a = admin(agw, "GET", "/admin/keys")
    assert a.status == 200
    text = orjson.dumps(a.body).decode()
    ids = {r["id"] for r in a.body["data"]}
    for secret, rec in made:
        assert rec["id"] in ids
        assert secret not in text and hash_secret(secret) not in text
    assert all("hash" not in r for r in a.body["data"])
    log = agw.log()
    assert not any(s in log or hash_secret(s) in log for s, _ in made)


async def test_a_revoked_key_is_refused_on_the_next_call(agw: GatewayHandle) -> None:
    secret, rec = new_key(agw, name="to-revoke")
    await chat(agw, secret)
    a = admin(agw, "POST", f"/admin/keys/{rec['id']}/revoke")
    assert a.status == 200 and a.body["status"] == "revoked"
    err = await refused(agw, secret)
    assert err.code == "key_refused" and "revoked" in err.message
    again = admin(agw, "POST", f"/admin/keys/{rec['id']}/revoke")
    assert again.body["revoked_at"] == a.body["revoked_at"]  # the first revocation stands
    assert admin(agw, "POST", f"/admin/keys/{rec['id']}/rotate").status == 409


async def test_rotation_keeps_settings_and_lineage_and_ends_the_old_key_after_its_grace(
        agw: GatewayHandle) -> None:
    settings = {"name": "rotating", "user": "ana", "features": ["faq"], "rpm": 600,
                "budgets": [{"usd": 5.0, "period": "month"}]}
    first, a = new_key(agw, **settings)
    before = time.time()
    r = admin(agw, "POST", f"/admin/keys/{a['id']}/rotate", {"grace_seconds": 3600})
    after = time.time()
    assert r.status == 201
    second, b, old = r.body["key"], r.body["record"], r.body["old"]
    assert second != first and b["id"] != a["id"]
    assert b["lineage"] == old["lineage"] == a["id"]
    assert old["replaced_by"] == b["id"] and old["status"] == "rotating"
    assert before + 3600 <= old["expires_at"] <= after + 3600
    assert {k: b[k] for k in settings} == {**settings, "budgets": [
        {"usd": 5.0, "tokens": None, "period": "month"}]}
    # Inside the grace both work.
    await chat(agw, first)
    await chat(agw, second)
    # A rotated key cannot fork its lineage.
    again = admin(agw, "POST", f"/admin/keys/{a['id']}/rotate")
    assert again.status == 409 and b["id"] in again.error["message"]

    # No grace: the old key is refused at once, the new one works.
    r = admin(agw, "POST", f"/admin/keys/{b['id']}/rotate", {"grace_seconds": 0})
    third, c = r.body["key"], r.body["record"]
    err = await refused(agw, second)
    assert "rotated" in err.message
    await chat(agw, third)
    await chat(agw, first)  # still inside its own grace
    statuses = {k["id"]: k["status"] for k in admin(agw, "GET", "/admin/keys").body["data"]}
    assert (statuses[a["id"]], statuses[b["id"]], statuses[c["id"]]) == (
        "rotating", "rotated", "active")


async def test_rotation_never_extends_an_earlier_expiry(agw: GatewayHandle) -> None:
    _, a = new_key(agw, expires_in_seconds=600)
    r = admin(agw, "POST", f"/admin/keys/{a['id']}/rotate", {"grace_seconds": 86400})
    assert r.body["old"]["expires_at"] == a["expires_at"]
    assert r.body["record"]["expires_at"] == a["expires_at"]  # the new key keeps the limit


# --- guard and validation --------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"x-api-key": "wrong"}])
def test_admin_needs_the_master_key(agw: GatewayHandle, headers: dict[str, str]) -> None:
    for method, path in [("GET", "/admin/keys"), ("POST", "/admin/keys"),
                         ("GET", "/admin/spend"), ("GET", "/admin/ledger"),
                         ("POST", "/admin/keys/key_x/revoke")]:
        a = admin(agw, method, path, {}, headers=headers)
        assert a.status == 401, (method, path)
        assert a.error["type"] == "authentication_error"
        assert "master key" in a.error["message"]


def test_a_virtual_key_is_not_a_master_key(agw: GatewayHandle) -> None:
    secret, _ = new_key(agw)
    a = admin(agw, "GET", "/admin/keys", headers={"Authorization": f"Bearer {secret}"})
    assert a.status == 403  # it may read its own dashboard, nothing else of the admin API
    assert a.error["type"] == "permission_error" and "/admin/dashboard" in a.error["message"]
    assert admin(agw, "GET", "/admin/keys", headers={"x-api-key": MASTER}).status == 200


def test_without_a_master_key_the_admin_api_is_off(sim: SimHandle) -> None:
    gw = start_gateway(gateway_config(sim.url))
    try:
        a = admin(gw, "GET", "/admin/keys", headers={"Authorization": "Bearer anything"})
    finally:
        gw.stop()
    assert a.status == 403
    assert a.error["type"] == "permission_error"
    assert "TOLLWAY_MASTER_KEY" in a.error["message"]


def test_unknown_ids_and_wrong_methods(agw: GatewayHandle) -> None:
    for method, path in [("GET", "/admin/keys/key_nope"), ("PATCH", "/admin/keys/key_nope"),
                         ("POST", "/admin/keys/key_nope/revoke"),
                         ("POST", "/admin/keys/key_nope/rotate")]:
        a = admin(agw, method, path, {})
        assert a.status == 404 and a.error["param"] == "id", (method, path)
    for method, path in [("DELETE", "/admin/keys"), ("GET", "/admin/keys/key_x/revoke"),
                         ("POST", "/admin/spend")]:
        a = admin(agw, method, path)
        assert a.status == 405 and a.error["code"] == "method_not_allowed", (method, path)


@pytest.mark.parametrize(("body", "param"), [
    ({"budgets": [{"usd": -1}]}, "budgets[0]"),
    ({"budgets": [{"usd": 1, "tokens": 5}]}, "budgets[0]"),
    ({"budgets": [{"period": "day"}]}, "budgets[0]"),
    ({"budgets": [{"usd": 5}, {"usd": 5, "period": "week"}]}, "budgets[1].period"),
    ({"budgets": [{"usd": 5, "periods": "day"}]}, "budgets[0]"),
    ({"budgets": {"usd": 5}}, "budgets"),
    ({"rpm": 0}, "rpm"),
    ({"tpm": "many"}, "tpm"),
    ({"models": ["no-such-model"]}, "models"),
    ({"features": [""]}, "features"),
    ({"disabled": "yes"}, "disabled"),
    ({"nmae": "typo"}, "nmae"),
])
def test_patch_validates_and_names_the_field(agw: GatewayHandle, body: dict[str, Any],
                                             param: str) -> None:
    _, rec = new_key(agw, name="patch-me")
    a = admin(agw, "PATCH", f"/admin/keys/{rec['id']}", body)
    assert a.status == 400, a.body
    assert a.error["type"] == "invalid_request_error" and a.error["param"] == param
    assert a.error["message"].startswith(param)
    assert admin(agw, "GET", f"/admin/keys/{rec['id']}").body == rec  # nothing changed


async def test_patch_changes_only_what_it_names(agw: GatewayHandle) -> None:
    secret, rec = new_key(agw, name="patch-ok", team="a", rpm=10)
    a = admin(agw, "PATCH", f"/admin/keys/{rec['id']}",
              {"budgets": [{"tokens": 100000, "period": "month"}, {"usd": 2.5}],
               "team": None, "models": ["sim", "sim-alias"]})
    assert a.status == 200, a.body
    assert a.body["budgets"] == [{"period": "month", "usd": None, "tokens": 100000},
                                 {"period": "day", "usd": 2.5, "tokens": None}]
    assert (a.body["team"], a.body["name"], a.body["rpm"]) == (None, "patch-ok", 10)
    await chat(agw, secret)
    assert admin(agw, "PATCH", f"/admin/keys/{rec['id']}", {"disabled": True}).status == 200
    assert "disabled" in (await refused(agw, secret)).message


def test_create_and_queries_validate_too(agw: GatewayHandle) -> None:
    cases = [("POST", "/admin/keys", {"expires_in_seconds": -5}, "expires_in_seconds"),
             ("POST", "/admin/keys", {"name": 7}, "name"),
             ("POST", f"/admin/keys/{new_key(agw)[1]['id']}/rotate", {"grace_seconds": -1},
              "grace_seconds"),
             ("GET", "/admin/spend?by=colour", None, "by"),
             ("GET", "/admin/spend?since=yesterday", None, "since"),
             ("GET", "/admin/ledger?until=2026-13-01", None, "until"),
             ("GET", "/admin/spend?since=2026-11-02&until=2026-11-01T00:00:00Z", None, "until"),
             ("GET", "/admin/spend?group=day", None, "group")]
    for method, path, body, param in cases:
        a = admin(agw, method, path, body)
        assert (a.status, a.error["param"]) == (400, param), (path, a.body)
    bad = admin(agw, "POST", "/admin/keys", raw=b"{not json")
    assert bad.status == 400 and "JSON" in bad.error["message"]


# --- spend and ledger ------------------------------------------------------------------

def ledger_rows(gw: GatewayHandle, rids: set[str]) -> list[dict[str, Any]]:
    """The rows of these requests. A row is recorded just after its answer is sent, so
    poll briefly: nothing outside the gateway can await that."""
    deadline = time.monotonic() + 5
    while True:
        rows = [r for r in admin(gw, "GET", "/admin/ledger").body["data"]
                if r["request_id"] in rids]
        if len(rows) == len(rids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


async def test_the_ledger_comes_in_pages(agw: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = new_key(agw, name="pager")
    tag = secrets.token_hex(4)
    rids = {f"page-{tag}-{i}" for i in range(5)}
    for rid in sorted(rids):
        await chat(agw, secret, "page me", rid=rid)
    ledger_rows(agw, rids)  # all recorded
    seen: list[dict[str, Any]] = []
    path = "/admin/ledger?limit=2"
    while True:
        page = admin(agw, "GET", path)
        assert page.status == 200 and len(page.body["data"]) <= 2
        seen += page.body["data"]
        if page.body["next"] is None:
            break
        path = "/admin/ledger?limit=2&" + urllib.parse.urlencode({"after": page.body["next"]})
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids))  # no row twice
    assert rids <= {r["request_id"] for r in seen}
    assert [(r["ts"], r["id"]) for r in seen] == sorted((r["ts"], r["id"]) for r in seen)
    for bad, param in (("limit=0", "limit"), ("limit=lots", "limit"),
                       ("after=yesterday", "after")):
        a = admin(agw, "GET", f"/admin/ledger?{bad}")
        assert a.status == 400 and a.body["error"]["param"] == param


async def test_spend_by_feature_matches_the_requests_made(agw: GatewayHandle,
                                                          fresh_sim: SimHandle) -> None:
    tag = secrets.token_hex(4)
    fa, fb, default = f"fa-{tag}", f"fb-{tag}", f"kf-{tag}"
    secret, rec = new_key(agw, name="spender", features=[default])
    t0 = time.time()
    plan = [(fa, "one"), (fa, "a somewhat longer question about things"), (fb, "two"),
            (None, "billed to the key's default feature")]
    want: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rids = set()
    for i, (feature, text) in enumerate(plan):
        rid = f"req-{tag}-{i}"
        rids.add(rid)
        r = await chat(agw, secret, text, feature=feature, rid=rid)
        w = want[feature or default]
        w["requests"] += 1
        w["input_tokens"] += r.usage.prompt_tokens
        w["output_tokens"] += r.usage.completion_tokens
        w["pico"] += r.usage.prompt_tokens * PRICE_IN * 1e6 + r.usage.completion_tokens * (
            PRICE_OUT * 1e6)  # pico-dollars per token = USD per 1M tokens x 1e6

    rows = ledger_rows(agw, rids)
    assert len(rows) == len(plan)
    for row in rows:
        assert (row["key_id"], row["key_lineage"], row["outcome"]) == (rec["id"], rec["id"], "ok")
        exact = (row["input_tokens"] * PRICE_IN + row["output_tokens"] * PRICE_OUT) / 1e6
        assert row["cost_usd"] == pytest.approx(exact, abs=1e-12) and row["cost_usd"] > 0
    assert sorted(r["feature"] for r in rows) == sorted(f or default for f, _ in plan)

    out = cli(agw, "spend", "--by", "feature", "--since", str(int(t0)), "--format", "json")
    assert out.returncode == 0, out.stderr
    report = orjson.loads(out.stdout)
    assert report["by"] == "feature"
    got = {r["group"]: r for r in report["data"] if r["group"].endswith(tag)}
    assert set(got) == set(want) == {fa, fb, default}
    for group, w in want.items():
        g = got[group]
        assert (g["requests"], g["input_tokens"], g["output_tokens"]) == (
            w["requests"], w["input_tokens"], w["output_tokens"])
        assert g["cost_usd"] == pytest.approx(w["pico"] / 1e12, abs=1e-12)
    total = report["total"]
    assert total["requests"] == sum(r["requests"] for r in report["data"])
    assert total["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in report["data"]),
                                              abs=1e-9)

    table = cli(agw, "spend", "--by", "feature", "--since", str(int(t0)))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("FEATURE") and lines[-1].startswith("TOTAL")
    assert any(ln.startswith(fa) and ln.split()[1] == "2" for ln in lines)

    # A window after the requests holds none of them.
    later = admin(agw, "GET", f"/admin/spend?by=feature&since={time.time() + 3600:.0f}")
    assert later.body["data"] == [] and later.body["total"]["requests"] == 0


# --- the CLI against the real server ---------------------------------------------------

async def test_cli_creates_lists_rotates_and_revokes(agw: GatewayHandle) -> None:
    made = cli(agw, "keys", "create", "--name", "cli-bot", "--feature", "cli",
               "--budget", "1usd/day", "--budget", "100000tokens/month", "--rpm", "100",
               "--expires", "30d")
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(":", 1) for line in made.stdout.splitlines())
    kid, secret = fields["id"].strip(), fields["key"].strip()
    assert "not shown again" in made.stderr
    await chat(agw, secret)

    listed = cli(agw, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(kid))
    assert "cli-bot" in line and "$1/day" in line and "100000 tokens/month" in line
    assert secret not in listed.stdout and secret[:6] in line
    records = orjson.loads(cli(agw, "keys", "list", "--format", "json").stdout)
    mine = next(r for r in records if r["id"] == kid)
    assert "hash" not in mine and mine["rpm"] == 100
    assert mine["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=120)

    rotated = cli(agw, "keys", "rotate", kid, "--grace", "0", "--format", "json")
    assert rotated.returncode == 0, rotated.stderr
    new = orjson.loads(rotated.stdout)
    await refused(agw, secret)
    await chat(agw, new["key"])

    revoked = cli(agw, "keys", "revoke", new["record"]["id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    await refused(agw, new["key"])


def test_cli_reports_errors_and_a_missing_gateway(agw: GatewayHandle) -> None:
    r = cli(agw, "keys", "revoke", "key_nope")
    assert (r.returncode, r.stderr) == (1, "tollway: No key with id 'key_nope'.\n")
    r = cli(agw, "keys", "list", master="wrong")
    assert r.returncode == 1 and r.stderr.startswith("tollway: Invalid master key")
    r = cli(agw, "spend", "--since", "last week")
    assert r.returncode == 1 and r.stderr.startswith("tollway: since:")
    nowhere = f"http://127.0.0.1:{free_port()}"
    r = cli(agw, "keys", "list", "--url", nowhere)
    assert r.returncode == 1 and nowhere in r.stderr and "tollway serve" in r.stderr


async def test_cli_spend_takes_relative_times(agw: GatewayHandle, fresh_sim: SimHandle) -> None:
    tag = secrets.token_hex(4)
    feature, rid = f"rel-{tag}", f"rel-{tag}"
    secret, _ = new_key(agw, name="relative")
    await chat(agw, secret, "relative times", feature=feature, rid=rid)
    assert len(ledger_rows(agw, {rid})) == 1

    def groups(*window: str) -> set[str]:
        out = cli(agw, "spend", "--by", "feature", *window, "--format", "json")
        assert out.returncode == 0, out.stderr
        return {r["group"] for r in orjson.loads(out.stdout)["data"]}

    assert feature in groups("--since", "1h")
    assert feature in groups("--since", "today", "--until", "today")
    assert feature not in groups("--since", "yesterday", "--until", "yesterday")
    assert feature not in groups("--until", "1h")


def test_cli_finds_the_gateway_from_its_configuration(agw: GatewayHandle,
                                                      tmp_path: Path) -> None:
    """server.host/port of ./tollway.yaml (or --config), as `tollway serve` reads them; the
    providers' secrets it names need not be set in the admin's shell."""
    cfg = tmp_path / "tollway.yaml"
    cfg.write_text(yaml.safe_dump({
        "server": {"host": "0.0.0.0", "port": agw.port},
        "models": {"m": {"deployments": [{"provider": "openai", "model": "m",
                                          "api_key": "${PROVIDER_KEY_NOT_SET}"}]}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env["TOLLWAY_MASTER_KEY"] = MASTER

    def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tollway.cli", *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=60)

    here = run("keys", "list", "--format", "json", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert isinstance(orjson.loads(here.stdout), list)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    named = run("spend", "--config", str(cfg), "--since", "1h", cwd=elsewhere)
    assert named.returncode == 0, named.stderr
    assert named.stdout.startswith("DAY")

    port = free_port()  # nothing listens there: the error says where the URL came from
    cfg.write_text(yaml.safe_dump({"server": {"port": port}}))
    gone = run("keys", "list", cwd=tmp_path)
    assert gone.returncode == 1
    assert f"http://127.0.0.1:{port}" in gone.stderr and "tollway.yaml" in gone.stderr


async def test_cli_spend_by_model_is_the_name_asked_and_by_upstream_what_answered(
        agw: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = new_key(agw, name="models")
    client = sdk(agw, secret)
    rids = set()
    for model in ("sim-alias", "sim", "sim-alias"):
        rid = f"model-{secrets.token_hex(4)}"
        rids.add(rid)
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "which model?"}],
            extra_headers={"x-request-id": rid})
    assert len(ledger_rows(agw, rids)) == 3

    def report(by: str) -> dict[str, int]:
        out = cli(agw, "spend", "--by", by, "--since", "1h", "--format", "json")
        assert out.returncode == 0, out.stderr
        return {r["group"]: r["requests"] for r in orjson.loads(out.stdout)["data"]}

    # Every test's requests are in the window: compare the groups, at least these counts.
    by_model, upstream = report("model"), report("upstream")
    assert by_model["sim-alias"] >= 2 and by_model["sim"] >= 1
    assert "sim-model" not in by_model  # an upstream name never joins the asked ones
    assert upstream["openai/sim-model"] >= 3
    assert not {"sim", "sim-alias"} & set(upstream)
    assert sum(by_model.values()) == sum(upstream.values())
    table = cli(agw, "spend", "--by", "upstream", "--since", "1h")
    assert table.stdout.startswith("UPSTREAM (PROVIDER/MODEL)")


async def test_cli_ledger_export_pages_through_a_window_with_a_progress_bar(
        agw: GatewayHandle, fresh_sim: SimHandle, tmp_path: Path) -> None:
    secret, _ = new_key(agw, name="exporter")
    tag = secrets.token_hex(4)
    rids = {f"export-{tag}-{i}" for i in range(5)}
    for rid in sorted(rids):
        await chat(agw, secret, "export me", feature=f"export-{tag}", rid=rid)
    mine = ledger_rows(agw, rids)
    assert len(mine) == 5
    check_exports(agw, mine, tmp_path)


def check_exports(gw: GatewayHandle, mine: list[dict[str, Any]], tmp_path: Path) -> None:
    """JSON lines in pages of 2, then CSV into a file, of the window from `mine`."""
    agw, rids = gw, {r["request_id"] for r in mine}
    since = str(min(r["ts"] for r in mine))
    lines = cli(agw, "ledger", "export", "--since", since, "--page-size", "2")
    assert lines.returncode == 0, lines.stderr
    rows = [orjson.loads(ln) for ln in lines.stdout.splitlines()]
    assert {r["request_id"] for r in rows} >= rids  # every page followed
    assert len({r["id"] for r in rows}) == len(rows)
    n = len(rows)
    assert "ledger: 100%" in lines.stderr and f"{n}/{n}" in lines.stderr

    out = tmp_path / "ledger.csv"
    csv_run = cli(agw, "ledger", "export", "--since", since, "--format", "csv",
                  "--out", str(out))
    assert csv_run.returncode == 0, csv_run.stderr
    assert csv_run.stdout == "" and f"wrote {n} rows to {out}" in csv_run.stderr
    header, *body = out.read_text().splitlines()
    assert header.split(",")[:3] == ["id", "request_id", "ts"]
    got = {line.split(",")[1]: line.split(",") for line in body}
    cost = header.split(",").index("cost_usd")
    for r in mine:
        assert float(got[r["request_id"]][cost]) == pytest.approx(r["cost_usd"], abs=1e-12)
    assert not list(tmp_path.glob("*.part"))


def test_serve_and_the_cli_both_take_the_port_of_tollway_yaml(sim: SimHandle,
                                                              tmp_path: Path) -> None:
    """The flow of `make run`: `tollway serve` and then `tollway keys` in the directory of
    a tollway.yaml, neither told a URL or a port."""
    port = free_port()
    config = gateway_config(sim.url)
    config["server"] = {**cast(dict[str, Any], config["server"]), "port": port}
    (tmp_path / "tollway.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLWAY_", "OPENAI_"))}
    env["TOLLWAY_MASTER_KEY"] = MASTER
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tollway.cli", "serve"], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        made = subprocess.run([sys.executable, "-m", "tollway.cli", "keys", "create", "--name",
                               "by-config"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("id:  key_")
    finally:
        proc.terminate()
        proc.wait(10)
