"""Hot reload (issue 23): the configuration read again on SIGHUP or POST /admin/reload,
validated first and swapped in at once. Under load — 1,000 requests, streamed and not,
50 at a time — one valid change and one broken file: no request fails, the valid
change takes effect, the broken one is refused (422 and a log line) and changes
nothing; requests in flight across the swap finish, and are priced, on the
configuration they began under."""

from __future__ import annotations

import asyncio
import copy
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import gateway_config
from tests.helpers.admin import call
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle, start_simulator
from tollway.store.embedded import EmbeddedStore

MASTER = "mk-reload"
TOTAL, CONCURRENCY, HELD = 1000, 50, 10
OLD = {"input": 1.0, "output": 2.0}  # USD per 1M tokens
NEW = {"input": 10.0, "output": 20.0}


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimHandle]:
    """Streams that last seconds: the ones held open across a swap."""
    with start_simulator(token_ms=150, output_tokens=40) as s:  # 6 s each
        yield s


def config(sim: SimHandle, slow: SimHandle, price: dict[str, float],
           **extra: Any) -> dict[str, Any]:
    cfg = gateway_config(sim.url)
    models = cfg["models"]
    assert isinstance(models, dict)
    models["held"] = {"deployments": [{"provider": "openai", "model": "held-model",
                                       "api_base": slow.openai_base, "api_key": "k"}]}
    cfg["server"] = {**cfg["server"], "max_tokens_cap": 200}  # type: ignore[dict-item]
    cfg["prices"] = {"sim-model": price, "held-model": price}
    return {**cfg, **extra}


def write(gw: GatewayHandle, cfg: dict[str, Any]) -> None:
    path = gw.workdir / "tollway.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg))
    tmp.replace(path)  # as an editor or a deploy would: whole, never half-written


def logged(gw: GatewayHandle, text: str, deadline_s: float = 30) -> None:
    """Until the gateway's log says `text`."""
    end = time.monotonic() + deadline_s
    while text not in gw.log():
        if time.monotonic() > end:
            raise AssertionError(f"never logged {text!r}:\n{gw.log()[-3000:]}")
        time.sleep(0.02)  # a log file has no event to await


def cost(input_tokens: int, output_tokens: int, price: dict[str, float]) -> float:
    return (input_tokens * price["input"] + output_tokens * price["output"]) / 1e6


async def test_reload_under_load(fresh_sim: SimHandle, slow_sim: SimHandle,
                                 tmp_path: Path) -> None:
    fresh_sim.config(token_ms=1)
    gw = start_gateway(config(fresh_sim, slow_sim, OLD), workdir=tmp_path,
                       env={"TOLLWAY_MASTER_KEY": MASTER})
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)
    failures: list[BaseException] = []
    done = 0
    reached = {n: asyncio.Event() for n in (250, 600)}

    async def one(i: int) -> None:
        nonlocal done
        messages = [{"role": "user", "content": f"request {i}"}]
        model = "sim-alias" if i % 3 == 0 else "sim"
        try:
            if i % 2:
                stream = await client.chat.completions.create(
                    model=model, messages=messages, stream=True, max_tokens=16)  # type: ignore[arg-type]
                text = "".join([c.choices[0].delta.content or "" async for c in stream
                                if c.choices])
            else:
                reply = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=16)  # type: ignore[arg-type]
                text = reply.choices[0].message.content or ""
            assert text
        except BaseException as e:  # every failure counts, whatever it is
            failures.append(e)
        done += 1
        for n, ev in reached.items():
            if done >= n:
                ev.set()

    queue = iter(range(TOTAL))

    async def worker() -> None:
        for i in queue:
            await one(i)

    async def held() -> tuple[str, list[str]]:
        """A long stream begun before the swap, read to its end after it."""
        raw = await client.chat.completions.with_raw_response.create(
            model="held", messages=[{"role": "user", "content": "held"}], stream=True,
            max_tokens=40)
        stream = raw.parse()
        chunks = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return raw.headers["x-request-id"], chunks

    try:
        workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
        await reached[250].wait()
        holding = [asyncio.create_task(held()) for _ in range(HELD)]
        await asyncio.to_thread(slow_sim.wait_for,
                                lambda s: s["streams_started"] >= HELD, 30)
        # The valid change: ten times the price, and an alias more — by SIGHUP.
        write(gw, config(fresh_sim, slow_sim, NEW, aliases={"sim-alias": "sim",
                                                            "sim-new": "sim"}))
        gw.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(logged, gw, "config reloaded from")
        assert slow_sim.stats()["streams_completed"] == 0  # the held ones still run
        await reached[600].wait()
        # The broken one (an alias to nothing; sim-new gone, the old price) — by the API.
        write(gw, config(fresh_sim, slow_sim, OLD, aliases={"sim-alias": "sim",
                                                            "oops": "no-such-model"}))
        status, body = await asyncio.to_thread(call, gw.url, MASTER, "POST",
                                               "/admin/reload")
        assert status == 422, body
        assert body["error"]["code"] == "invalid_config"
        assert "aliases.oops: points to 'no-such-model'" in body["error"]["message"]
        await asyncio.gather(*workers)
        held_ids = [rid for rid, chunks in await asyncio.gather(*holding) if "".join(chunks)]
        assert len(held_ids) == HELD

        assert failures == [], failures[:3]
        assert done == TOTAL
        log = gw.log()
        assert "config reload (POST /admin/reload) refused; still serving the previous " \
               "configuration: aliases.oops: points to 'no-such-model'" in log
        assert "Traceback" not in log
        # The valid change took effect (the broken one did not: sim-new is served, at
        # the new price).
        after = await client.chat.completions.with_raw_response.create(
            model="sim-new", messages=[{"role": "user", "content": "after"}], max_tokens=16)
        usage = after.parse().usage
        assert usage is not None
        assert float(after.headers["x-tollway-cost-usd"]) == pytest.approx(
            cost(usage.prompt_tokens, usage.completion_tokens, NEW))
    finally:
        await client.close()
        gw.stop()  # flushes the ledger
    store = EmbeddedStore(str(tmp_path / ".tollway"))
    try:
        rows = {r.request_id: r for r in await store.ledger.rows()}
    finally:
        await store.close()
    assert len(rows) == TOTAL + HELD + 1
    assert all(r.status == 200 for r in rows.values())
    # Begun before the swap, finished after it: priced as they began.
    for rid in held_ids:
        r = rows[rid]
        assert r.output_tokens == 40
        assert r.cost_usd == pytest.approx(cost(r.input_tokens, r.output_tokens, OLD))


def test_reload_reports_what_needs_a_restart(sim: SimHandle, slow_sim: SimHandle,
                                             tmp_path: Path) -> None:
    first = config(sim, slow_sim, OLD)
    gw = start_gateway(first, workdir=tmp_path, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        moved = copy.deepcopy(first)
        moved["server"] = {**moved["server"], "port": gw.port + 1, "max_tokens_cap": 300}
        write(gw, moved)
        status, body = call(gw.url, MASTER, "POST", "/admin/reload")
        assert status == 200, body
        assert body["changed"] == ["server"] and body["needs_restart"] == ["server.port"]
        assert body["source"] == str(gw.workdir / "tollway.yaml")
        logged(gw, "config reloaded from")
        assert "needs a restart to apply: server.port" in gw.log()
        # Only the master key may reload; open mode has no admin API at all.
        denied, _ = call(gw.url, "tw-not-a-key", "POST", "/admin/reload")
        assert denied == 401
        # The rest of the change applies: 250 tokens were past the old cap, not the new.
        client = openai.OpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="sim", messages=[{"role": "user", "content": "x"}], max_tokens=250)
        client.close()
        assert "x-tollway-max-tokens-clamped" not in raw.headers
    finally:
        gw.stop()
