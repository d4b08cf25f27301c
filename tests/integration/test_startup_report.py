"""`tollway serve` says what it runs (issue 23): the report on stdout, `--quiet` its one
essential line; the ledger's rows are echoed on stderr only when asked (or on the shared
store), so local work is not buried under JSON."""

from __future__ import annotations

import openai

from tests.conftest import gateway_config
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle


def served_once(gw: GatewayHandle) -> str:
    """One chat request, then the gateway stopped (its log complete); the request id."""
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="sim", messages=[{"role": "user", "content": "hi"}])
        client.close()
        return str(raw.headers["x-request-id"])
    finally:
        gw.stop()


def test_the_report_says_what_runs_and_the_ledger_is_quiet(sim: SimHandle) -> None:
    gw = start_gateway(gateway_config(sim.url))
    rid = served_once(gw)
    log = gw.log()
    lines = log.splitlines()
    first = next(i for i, ln in enumerate(lines) if "serving on" in ln)
    assert lines[first].startswith("tollway ") and f":{gw.port}/v1" in lines[first]
    assert lines[first].endswith("[OPEN: no key required]")
    report = lines[first + 1:]
    assert f"  config    {gw.workdir / 'tollway.yaml'}" in report
    assert any(ln.startswith("  store     embedded") for ln in report)
    assert any(ln.split("->")[0].strip() == "sim-alias" and ln.endswith("-> sim")
               for ln in report)
    assert any(ln.startswith("  WARNING   the gateway is open") for ln in report)
    assert "sim-key" not in log
    # The embedded store, no access_log setting: no JSON line per request.
    assert rid not in log


def test_quiet_prints_one_line_and_an_asked_for_echo(sim: SimHandle) -> None:
    cfg = gateway_config(sim.url)
    cfg["server"] = {**cfg["server"], "access_log": True}  # type: ignore[dict-item]
    gw = start_gateway(cfg, args=["--quiet"], env={"TOLLWAY_MASTER_KEY": "mk-quiet"})
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="mk-quiet", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="sim", messages=[{"role": "user", "content": "hi"}])
        client.close()
        rid = raw.headers["x-request-id"]
    finally:
        gw.stop()
    log = gw.log()
    said = [ln for ln in log.splitlines() if ln.startswith(("tollway ", "  "))]
    assert len(said) == 1 and "serving on" in said[0] and "OPEN" not in said[0]
    assert "mk-quiet" not in log
    # Asked for: the ledger row on stderr, as one JSON line.
    assert any(rid in ln and ln.startswith("{") for ln in log.splitlines())
