"""`tollway keys` / `tollway spend`: argument parsing, output formats, and what the CLI
sends and prints, against a stub admin API (the real one is in the integration tests)."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson
import pytest

from tests.helpers.gateway import free_port
from tollway import admin_cli, relative_time
from tollway.accounting.money import usd, usd_column
from tollway.accounting.rows import SpendRow
from tollway.admin_cli import KeyView, SpendReport, parse_budget, parse_duration
from tollway.config import Budget
from tollway.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tollway")
    admin_cli.add_commands(p.add_subparsers(dest="command", required=True))
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Stub:
    """An admin API that answers every request with `status` + `reply`."""

    url: str
    status: int = 200
    reply: Any = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    monkeypatch.setenv("TOLLWAY_MASTER_KEY", "master-secret")
    state = Stub(url="")

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            state.seen.append(Seen(self.command, self.path, dict(self.headers),
                                   orjson.loads(raw) if raw else None))
            body = orjson.dumps(state.reply)
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("TOLLWAY_URL", state.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


VIEW = {"id": "key_0123456789ab", "hint": "tw-Abc…wxyz", "created_at": 1_790_000_000.0,
        "lineage": "key_0123456789ab", "status": "active", "name": "bot", "user": None,
        "team": "search", "features": ["chat"], "models": [], "rpm": 60, "tpm": None,
        "budgets": [{"period": "day", "usd": 10.0, "tokens": None}], "expires_at": None,
        "disabled": False, "revoked_at": None, "replaced_by": None}


# --- parsing ---------------------------------------------------------------------------

def test_budgets_are_parsed_with_units_and_periods() -> None:
    assert parse_budget("10usd/day") == Budget(period="day", usd=10.0)
    assert parse_budget("$2.5/month") == Budget(period="month", usd=2.5)
    assert parse_budget("100000tokens/month") == Budget(period="month", tokens=100000)
    assert parse_budget("50USD/total") == Budget(period="total", usd=50.0)
    assert parse_budget("7usd") == Budget(period="day", usd=7.0)  # no period: daily


@pytest.mark.parametrize("bad", ["10/day", "10eur/day", "10usd/week", "1.5tokens/day",
                                 "0usd/day", "-1usd/day"])
def test_bad_budgets_are_refused_by_argparse(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["keys", "create", "--budget", bad])
    assert e.value.code == 2
    assert "--budget" in capsys.readouterr().err


def test_durations() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("12h") == 43200
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")


def test_keys_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["keys"])
    assert "create" in capsys.readouterr().err


# --- formatting ------------------------------------------------------------------------

def test_dollars_are_exact_for_small_amounts() -> None:
    assert usd(0) == "0.00"
    assert usd(12.5) == "12.50"
    assert usd(100) == "100.00"
    assert usd(0.000138) == "0.000138"
    assert usd(0.000046 * 3) == "0.000138"  # float-sum noise is gone, not the value
    assert usd(1e-12) == "0.000000000001"
    assert usd(0.5, decimals=6) == "0.500000"
    assert usd(-0.0) == "0.00"
    assert usd_column([1.5, 0.000138, 0]) == ["1.500000", "0.000138", "0.000000"]


def row(group: str, n: int, cost: float, saved: float = 0.0) -> SpendRow:
    return SpendRow(group=group, requests=n, input_tokens=10 * n, output_tokens=20 * n,
                    cost_usd=cost, saved_usd=saved)


def test_spend_table_aligns_columns_and_ends_with_the_total() -> None:
    report = SpendReport(by="feature", data=[row("chat", 3, 0.000138), row("search", 12, 1.5)],
                         total=row("total", 15, 1.500138))
    lines = admin_cli.spend_table(report).splitlines()
    assert lines[0].split() == ["FEATURE", "REQUESTS", "INPUT", "TOKENS", "OUTPUT", "TOKENS",
                                "COST", "USD"]
    assert [ln.split()[0] for ln in lines[1:]] == ["chat", "search", "TOTAL"]
    assert lines[1].split()[-1] == "0.000138"
    assert lines[2].split()[-1] == "1.500000"  # padded to the column's decimals
    assert lines[3].split()[1:] == ["15", "150", "300", "1.500138"]
    assert len({len(ln) for ln in lines}) == 1  # right-aligned numbers end together
    assert "SAVED" not in lines[0]  # nothing was saved: no column


def test_spend_table_shows_savings_once_there_are_any() -> None:
    report = SpendReport(by="model", data=[row("gpt-4o", 1, 0.01, saved=0.02)],
                         total=row("total", 1, 0.01, saved=0.02))
    lines = admin_cli.spend_table(report).splitlines()
    assert lines[0].endswith("SAVED USD")
    assert lines[-1].split()[-2:] == ["0.01", "0.02"]


def test_spend_csv_has_groups_but_no_total(capsys: pytest.CaptureFixture[str]) -> None:
    admin_cli.spend_csv(SpendReport(by="day", data=[row("2026-11-01", 2, 0.0000921)],
                                    total=row("total", 2, 0.0000921)))
    assert capsys.readouterr().out.splitlines() == [
        "day,requests,input_tokens,output_tokens,cost_usd,saved_usd",
        "2026-11-01,2,20,40,0.0000921,0.00"]


def test_table_and_csv_print_the_same_dollars(capsys: pytest.CaptureFixture[str]) -> None:
    report = SpendReport(by="model", data=[row("a", 1, 0.5, saved=0.25),
                                           row("b", 2, 0.000138, saved=1e-9)],
                         total=row("total", 3, 0.500138, saved=0.250000001))
    admin_cli.spend_csv(report)
    csv_cells = [ln.split(",")[-2:] for ln in capsys.readouterr().out.splitlines()[1:]]
    table_cells = [ln.split()[-2:] for ln in admin_cli.spend_table(report).splitlines()[1:3]]
    assert csv_cells == table_cells == [["0.500000", "0.250000000"],
                                        ["0.000138", "0.000000001"]]


def test_key_table_shows_hints_limits_and_status() -> None:
    k = msgspec.convert(VIEW, KeyView)
    text = admin_cli.keys_table([k])
    header, line = text.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "KEY"]
    assert "tw-Abc…wxyz" in line and "60 rpm, $10/day" in line and line.endswith("active")
    assert admin_cli.keys_table([]).startswith("no keys yet")


# --- against a stub server -------------------------------------------------------------

def test_create_sends_the_settings_and_prints_the_secret_once(
        stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.status, stub.reply = 201, {"key": "tw-secret", "record": VIEW}
    assert run(["keys", "create", "--name", "bot", "--team", "search", "--feature", "chat",
                "--feature", "faq", "--rpm", "60", "--budget", "10usd/day",
                "--budget", "5000tokens/month", "--expires", "30d"]) == 0
    seen = stub.seen[-1]
    assert (seen.method, seen.path) == ("POST", "/admin/keys")
    assert seen.headers["Authorization"] == "Bearer master-secret"
    assert seen.body == {"name": "bot", "team": "search", "features": ["chat", "faq"],
                         "rpm": 60, "expires_in_seconds": 30 * 86400,
                         "budgets": [{"period": "day", "usd": 10.0, "tokens": None},
                                     {"period": "month", "usd": None, "tokens": 5000}]}
    out = capsys.readouterr()
    assert out.out == "id:  key_0123456789ab\nkey: tw-secret\n"
    assert "not shown again" in out.err


def test_list_json_prints_the_records(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply = {"data": [VIEW]}
    assert run(["keys", "list", "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == [VIEW]
    assert stub.seen[-1].path == "/admin/keys"


def test_rotate_and_spend_send_their_options(stub: Stub,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    stub.status = 201
    stub.reply = {"key": "tw-new", "record": VIEW, "old": {**VIEW, "expires_at": 1.8e9}}
    assert run(["keys", "rotate", "key_0123456789ab", "--grace", "1h"]) == 0
    assert stub.seen[-1].body == {"grace_seconds": 3600}
    assert stub.seen[-1].path == "/admin/keys/key_0123456789ab/rotate"
    assert "tw-new" in capsys.readouterr().out

    stub.status = 200
    stub.reply = {"by": "user", "data": [], "total": msgspec_row("total")}
    assert run(["spend", "--by", "user", "--since", "2026-11-01", "--format", "json"]) == 0
    assert stub.seen[-1].path == "/admin/spend?by=user&since=2026-11-01"
    stub.reply = {"by": "batch", "data": [msgspec_row("batch_1")], "total": msgspec_row("total")}
    assert run(["spend", "--by", "batch"]) == 0
    assert stub.seen[-1].path == "/admin/spend?by=batch"
    out = capsys.readouterr().out
    assert "BATCH" in out and "batch_1" in out


def msgspec_row(group: str) -> dict[str, Any]:
    return {"group": group, "requests": 0, "input_tokens": 0, "output_tokens": 0,
            "cost_usd": 0.0, "saved_usd": 0.0}


def test_server_errors_are_printed_with_exit_1(stub: Stub,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    stub.status = 404
    stub.reply = {"error": {"message": "No key with id 'key_nope'.", "type":
                            "invalid_request_error", "param": "id", "code": "not_found"}}
    assert run(["keys", "revoke", "key_nope"]) == 1
    assert capsys.readouterr().err == "tollway: No key with id 'key_nope'.\n"


def test_a_gateway_that_is_not_running_is_named(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("TOLLWAY_MASTER_KEY", "m")
    assert run(["keys", "list", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tollway: cannot reach the gateway at {url}")
    assert "tollway serve" in err


def test_no_master_key_is_explained(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TOLLWAY_MASTER_KEY", raising=False)
    assert run(["spend"]) == 1
    assert "TOLLWAY_MASTER_KEY" in capsys.readouterr().err


# --- relative times and the gateway's address ------------------------------------------

MIDNIGHT = 1_790_035_200.0  # 2026-09-22T00:00:00Z
NOW = MIDNIGHT + 12 * 3600 + 34


@pytest.mark.parametrize(("text", "end", "want"), [
    ("1h", False, NOW - 3600), ("30m", False, NOW - 1800), ("7d", False, NOW - 7 * 86400),
    ("2w", True, NOW - 14 * 86400), ("90s", False, NOW - 90), ("1.5h ago", False, NOW - 5400),
    ("now", True, NOW), ("today", False, MIDNIGHT), ("today", True, MIDNIGHT + 86400),
    ("yesterday", False, MIDNIGHT - 86400), ("Yesterday", True, MIDNIGHT),
])
def test_relative_times_are_resolved_against_now(text: str, end: bool, want: float) -> None:
    assert float(relative_time.resolve(text, NOW, end=end)) == pytest.approx(want, abs=1e-3)


def test_absolute_times_pass_through_and_nonsense_is_refused() -> None:
    for text in ("2026-11-01", "2026-11-01T12:00:00Z", "1790000000", "1790000000.5"):
        assert relative_time.resolve(text, NOW) == text
    for bad in ("last week", "1y", "-1h", "2026-13-01"):
        with pytest.raises(ValueError, match="30m, 1h, 7d"):
            relative_time.resolve(bad, NOW)


def test_spend_sends_relative_times_as_epoch_seconds(stub: Stub,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    stub.reply = {"by": "day", "data": [], "total": msgspec_row("total")}
    before = time.time()
    assert run(["spend", "--since", "1h", "--until", "now", "--format", "json"]) == 0
    q = parse_qs(urlsplit(stub.seen[-1].path).query)
    since, until = float(q["since"][0]), float(q["until"][0])
    assert until - since == pytest.approx(3600, abs=1e-3)
    assert before <= until <= time.time()
    assert run(["spend", "--since", "last week"]) == 1
    assert capsys.readouterr().err.startswith("tollway: since: expected a UTC date")
    assert len(stub.seen) == 1  # refused before asking the gateway


def test_listen_url_reaches_the_server_from_this_machine() -> None:
    assert admin_cli.listen_url("127.0.0.1", 4100) == "http://127.0.0.1:4100"
    assert admin_cli.listen_url("0.0.0.0", 4100) == "http://127.0.0.1:4100"
    assert admin_cli.listen_url("::", 4100) == "http://[::1]:4100"
    assert admin_cli.listen_url("gw.internal", 80) == "http://gw.internal:80"


def test_the_url_comes_from_the_option_the_environment_then_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("server:\n  port: 4123\n  host: 0.0.0.0\nmodels:\n  m:\n    deployments:\n"
                   "      - {provider: openai, model: m, api_key: '${NOT_SET_HERE}'}\n")
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    monkeypatch.delenv("TOLLWAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert admin_cli.gateway_url(None, None) == (admin_cli.DEFAULT_URL, "the default")
    assert admin_cli.gateway_url(None, str(cfg)) == (
        "http://127.0.0.1:4123", f"server.host/port of {cfg}")  # no provider secret needed
    monkeypatch.setenv("TOLLWAY_CONFIG", str(cfg))
    assert admin_cli.gateway_url(None, None)[0] == "http://127.0.0.1:4123"
    monkeypatch.setenv("TOLLWAY_URL", "http://env:1")
    assert admin_cli.gateway_url(None, str(cfg)) == ("http://env:1", "TOLLWAY_URL")
    assert admin_cli.gateway_url("http://opt:2", str(cfg)) == ("http://opt:2", "--url")


def test_a_bad_server_section_is_a_configuration_error(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLWAY_URL", raising=False)
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("server:\n  prot: 4123\n")
    with pytest.raises(ConfigError, match=r"server: unknown field `prot` \(did you mean `port`"):
        admin_cli.gateway_url(None, str(cfg))


def test_spend_tables_say_which_model_name_they_group_by() -> None:
    for by, head in (("model", "MODEL ASKED"), ("upstream", "UPSTREAM (PROVIDER/MODEL)")):
        report = SpendReport(by=by, data=[row("x", 1, 0.1)], total=row("total", 1, 0.1))
        assert admin_cli.spend_table(report).splitlines()[0].startswith(head)
