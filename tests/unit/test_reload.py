"""A reload's rules and state (issue 23): what changes, what needs a restart, what is
kept — deployments left as they were keep their breaker and pacing state, budget holds
and the cache stay, and a request in flight finishes on the configuration it began
under."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from tests.unit.fakes import FakeProvider, request
from tollway import config
from tollway.accounting.settlement import Answered
from tollway.config import changes
from tollway.gateway import Gateway
from tollway.gateway.call import Call
from tollway.gateway.routes import Routes
from tollway.routing.router import Router

BASE: dict[str, Any] = {
    "models": {
        "a": {"deployments": [{"provider": "openai", "model": "fake-model", "api_key": "k"}]},
        "b": {"deployments": [{"provider": "openai", "model": "other-model", "api_key": "k"}]},
    },
    "prices": {"fake-model": {"input": 1.0, "output": 2.0},
               "other-model": {"input": 1.0, "output": 2.0}},
    "cache": {"enabled": True},
    "budgets": {"global": [{"usd": 100.0}]},
}


def edited(**changes_: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out.update(changes_)
    return out


def test_a_kept_deployment_keeps_its_state_and_a_changed_one_starts_afresh() -> None:
    first = Routes(config.parse(BASE, env={}), Router({}))
    [kept], [moved] = first.resolve("a").deployments, first.resolve("b").deployments
    first.router.upstreams[kept].breaker.record(False)
    new = copy.deepcopy(BASE)
    new["models"]["b"]["deployments"][0]["api_key"] = "k2"
    new["prices"]["fake-model"] = {"input": 5.0, "output": 6.0}
    second = Routes(config.parse(new, env={}), Router({}, earlier=first.router))
    # Same route, same settings: the same deployment (its identity keys the providers'
    # caches), its breaker's record with it — and priced by the new table.
    assert second.resolve("a").deployments == [kept]
    assert second.router.upstreams[kept] is first.router.upstreams[kept]
    price = second.price(kept)
    assert price is not None and price.input == 5.0
    [fresh] = second.resolve("b").deployments
    assert fresh is not moved and fresh.api_key == "k2"
    assert second.router.upstreams[fresh] is not first.router.upstreams[moved]


def test_what_only_a_restart_changes_is_named_and_kept_as_it_runs() -> None:
    running = config.parse(BASE, env={})
    new = config.parse(edited(server={"port": 4100, "max_tokens_cap": 20000},
                              store={"path": "/elsewhere"}, aliases={"c": "a"}), env={})
    assert changes.needs_restart(running, new) == ["server.port", "store"]
    kept = changes.as_running(running, new)
    assert (kept.server.port, kept.store.path) == (running.server.port, running.store.path)
    assert kept.server.max_tokens_cap == 20000 and kept.aliases == {"c": "a"}
    assert changes.changed(running, kept) == ["aliases", "server"]
    assert changes.changed(running, running) == []


async def test_the_swap_keeps_the_state_and_in_flight_requests_keep_their_rules(
        tmp_path: Path) -> None:
    raw = edited(store={"path": str(tmp_path)})
    provider = FakeProvider()
    gw = Gateway(config.parse(raw, env={}),
                 providers={"openai": provider, "anthropic": provider, "local": provider})
    await gw.start()
    try:
        cache, held, before = gw.cache, gw.admission.held, gw.pipeline
        began = Call("in-flight")
        pipeline = gw.pipeline  # what an endpoint holds for its request
        answer = await pipeline.chat(began, request("hi", model="a"))

        new = copy.deepcopy(raw)
        new["prices"]["fake-model"] = {"input": 10.0, "output": 20.0}
        new["aliases"] = {"c": "a"}
        new["budgets"] = {"global": [{"usd": 50.0}]}  # a new limit, the same counter
        [budget] = gw.admission.budgets(began.caller, None, time.time())
        holding = (await gw.store.budgets.levels([budget.counter], time.time()))[0]
        assert holding > 0  # the in-flight request's worst case
        done = gw.reload(config.parse(new, env={}))
        assert done.changed == ["aliases", "prices", "budgets"] and done.needs_restart == []
        [now_applied] = gw.admission.budgets(began.caller, None, time.time())
        assert (now_applied.counter, now_applied.limit) == (budget.counter, 50.0)
        assert (await gw.store.budgets.levels([budget.counter], time.time()))[0] == holding
        assert gw.pipeline is not before and gw.chat == gw.pipeline.chat
        assert gw.cache is cache and gw.admission.held is held

        # The request begun before the swap is priced as it began: 10 in, 5 out.
        old = await pipeline.finish(began, Answered(answer))
        assert old.cost_usd is not None and abs(old.cost_usd - (10 * 1 + 5 * 2) / 1e6) < 1e-12
        # The new alias answers: first from the cache kept across the swap, then a
        # new question at the new price.
        hit = Call("hit")
        s = await gw.finish(hit, Answered(await gw.chat(hit, request("hi", model="c"))))
        assert hit.cache is not None and hit.cache.status == "hit" and s.cost_usd == 0
        after = Call("after")
        s = await gw.finish(after, Answered(await gw.chat(after, request("new", model="c"))))
        assert s.cost_usd is not None and abs(s.cost_usd - (10 * 10 + 5 * 20) / 1e6) < 1e-12
    finally:
        await gw.close()
