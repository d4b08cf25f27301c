"""Names a wildcard alias serves (`openai/*`): how a name is matched, which provider an
unprefixed name goes to, what it is priced at, the bounded cache of routes built on
first use, key allow-lists, and the configuration's checks — nothing called."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tollway.accounting.prices import load_table
from tollway.accounting.settlement import ZERO, Aborted, Releases
from tollway.config import embedded_default, parse
from tollway.config.wildcards import Patterns, fill
from tollway.errors import ConfigError, Forbidden, ModelNotFound
from tollway.gateway import routes as routes_mod
from tollway.gateway.routes import Routes
from tollway.keys import KeyRecord
from tollway.policy.auth import allows
from tollway.routing.router import Router

TABLE = load_table()


def dep(provider: str, model: str = "*", **kw: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "api_key": "k", **kw}


CONFIG: dict[str, Any] = {
    "models": {
        "openai/*": {"deployments": [dep("openai")], "max_cost_usd": 0.5,
                     "retry": {"max_attempts": 2}, "fallbacks": ["backup"]},
        "anthropic/*": {"deployments": [dep("anthropic")]},
        "gpt-4o": {"deployments": [dep("openai", "gpt-4o-2024-05-13")]},  # exact wins
        "backup": {"deployments": [dep("local", "smollm2-135m")]},
    },
    "tiers": {"fast": {"model": "anthropic/claude-haiku-4-5"}},
}


def routes(cfg: dict[str, Any] | None = None, forget: Any = lambda: None) -> Routes:
    return Routes(parse(cfg or CONFIG, env={}), Router({}), forget)


def choose(r: Routes, name: str, key: KeyRecord | None = None,
           releases: Releases | None = None) -> Any:
    """The route for `name`; held until `releases` is unwound, or let go at once."""
    held = releases or Releases()
    route = r.choose(name, None, key, False, held)[0]
    if releases is None:
        asyncio.run(held.unwind(Aborted(), ZERO, "req"))
    return route


@pytest.mark.parametrize(("name", "alias", "served", "upstream", "priced_as"), [
    ("gpt-4o-mini-2024-07-18", "openai/*", "openai/gpt-4o-mini-2024-07-18",
     "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai/gpt-4o-2024-08-06", "openai/*", "openai/gpt-4o-2024-08-06",
     "gpt-4o-2024-08-06", "gpt-4o"),
    # The table's own price for a snapshot that has one.
    ("openai/gpt-4o-2024-05-13", "openai/*", "openai/gpt-4o-2024-05-13",
     "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ("gpt-4", "openai/*", "openai/gpt-4", "gpt-4", "gpt-4"),
    ("gpt-3.5-turbo", "openai/*", "openai/gpt-3.5-turbo", "gpt-3.5-turbo", "gpt-3.5-turbo"),
    ("o3-mini-2025-01-31", "openai/*", "openai/o3-mini-2025-01-31", "o3-mini-2025-01-31",
     "o3-mini"),
    ("claude-3-5-haiku-20241022", "anthropic/*", "anthropic/claude-3-5-haiku-20241022",
     "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("anthropic/claude-sonnet-4-5-20250929", "anthropic/*",
     "anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929",
     "claude-sonnet-4-5"),
])
def test_a_name_a_wildcard_serves(name: str, alias: str, served: str, upstream: str,
                                  priced_as: str) -> None:
    route = choose(routes(), name)
    (d,) = route.deployments
    assert (route.alias, route.name, d.model) == (alias, served, upstream)
    assert d.provider == alias.split("/")[0] and d.api_key == "k"
    assert route.price(d) == TABLE.get(priced_as) and route.price(d) is not None


def test_an_alias_configured_by_its_name_wins_over_a_wildcard() -> None:
    route = choose(routes(), "gpt-4o")
    assert (route.alias, route.deployments[0].model, route.wildcard) == (
        "gpt-4o", "gpt-4o-2024-05-13", False)
    # ... but its provider-prefixed name is the wildcard's.
    assert choose(routes(), "openai/gpt-4o").deployments[0].model == "gpt-4o"


def test_a_wildcard_route_carries_its_aliases_settings() -> None:
    r = routes()
    route = choose(r, "gpt-4o-mini")
    assert route.limits.max_cost_usd == 0.5 and route.pool.retry.max_attempts == 2
    assert route.chain == [route.pool, r.resolve("backup").pool]  # its fallbacks
    assert route.deployments[0] in r.router.upstreams  # a breaker and pacing of its own


def test_an_unpriced_name_is_served_with_no_price() -> None:
    route = choose(routes(), "openai/made-up-model")
    assert route.deployments[0].model == "made-up-model"
    assert route.price(route.deployments[0]) is None


@pytest.mark.parametrize("name", [
    "made-up-model",  # no provider: neither the table nor the name's family says whose
    "gemini-2.5-pro",  # priced, but no wildcard for its provider
    "openai/",  # nothing for the * to stand for
    "openai/" + "x" * 201,
    "openai/two words",
    "openai/*",  # a pattern is not a model
    "mistral/large",
])
def test_names_no_wildcard_serves_are_404(name: str) -> None:
    with pytest.raises(ModelNotFound) as got:
        choose(routes(), name)
    assert "openai/*" in got.value.message  # what is served, patterns included


def test_the_same_model_by_either_name_is_one_route() -> None:
    r = routes()
    a, b = choose(r, "gpt-4o-mini"), choose(r, "openai/gpt-4o-mini")
    assert a is b and a.deployments[0] is b.deployments[0]


def test_a_longer_prefix_wins() -> None:
    cfg = {"models": {"*": {"deployments": [dep("openai", "*")]},
                      "claude-*": {"deployments": [dep("anthropic", "claude-*")]}}}
    r = routes(cfg)
    assert choose(r, "claude-opus-4-5").deployments[0].provider == "anthropic"
    assert choose(r, "claude-opus-4-5").deployments[0].model == "claude-opus-4-5"
    assert choose(r, "llama-3").deployments[0].provider == "openai"


def test_patterns_match_a_prefix_and_fill_the_star() -> None:
    p = Patterns(["openai/*", "openai/ft:*", "local"])
    assert p.match("openai/ft:gpt-4o:org") == ("openai/ft:*", "gpt-4o:org")
    assert p.match("openai/gpt-4o") == ("openai/*", "gpt-4o")
    assert p.match_with("gpt-4o", "openai") == ("openai/*", "gpt-4o", "openai/gpt-4o")
    assert p.match_with("gpt-4o", None) is None and p.match("local") is None
    assert fill("*", "gpt-4o") == "gpt-4o" and fill("claude-*", "x") == "claude-x"
    assert fill("fixed", "x") == "fixed"


def test_tier_and_fallback_names_are_built_at_start_and_never_leased() -> None:
    r = routes()
    route = r.choose("tier:fast", None, None, False, Releases())[0]
    assert route.name == "anthropic/claude-haiku-4-5" and not route.wildcard
    assert route.chain == [route.pool]


def test_a_request_holds_its_route_until_it_is_settled() -> None:
    r = routes()
    held = Releases()
    route = choose(r, "gpt-4o-mini", releases=held)
    assert route.users == 1 and len(held.pending) == 1
    assert choose(r, "gpt-4o-mini") is route and route.users == 1  # another came and went
    asyncio.run(held.unwind(Aborted(), ZERO, "req"))
    assert route.users == 0


def test_the_cache_is_bounded_and_never_drops_a_route_in_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_mod, "MAX_WILDCARD_ROUTES", 8)
    forgotten: list[int] = []
    r = routes(forget=lambda: forgotten.append(1))
    held = Releases()
    busy = choose(r, "openai/model-busy", releases=held)
    for i in range(30):
        choose(r, f"openai/model-{i}")
    assert len(r._matched) <= 8 and forgotten  # bounded; providers told to forget
    assert r.find("openai/model-busy") is busy  # held: kept, with its upstream
    assert busy.deployments[0] in r.router.upstreams
    gone = [d for d in r.router.upstreams if d.model == "model-0"]
    assert gone == []  # an evicted route's upstream state went with it
    assert choose(r, "openai/model-0").deployments[0].model == "model-0"  # rebuilt


def test_listing_names_what_wildcards_reach() -> None:
    listed = routes().listed()
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4", "o3", "claude-sonnet-4-5",
            "claude-3-5-haiku", "backup", "tier:fast"} <= set(listed)
    assert "openai/*" not in listed and "gemini-2.5-pro" not in listed
    assert "smollm2-135m" not in listed  # local: no wildcard serves it


def test_servable_answers_for_any_name_a_request_could_use() -> None:
    r = routes()
    assert r.servable("gpt-4o-mini-2024-07-18") and r.servable("openai/anything")
    assert r.servable("backup") and not r.servable("made-up") and not r.servable("x/y")


def test_the_zero_setup_default_serves_snapshots_by_provider() -> None:
    cfg = embedded_default({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "a"})
    r = Routes(cfg, Router({}))
    assert choose(r, "gpt-4o-mini-2024-07-18").deployments[0].provider == "openai"
    assert choose(r, "claude-3-5-haiku-20241022").deployments[0].provider == "anthropic"
    assert choose(r, "default").deployments[0].provider == "local"
    only_local = Routes(embedded_default({}), Router({}))
    with pytest.raises(ModelNotFound):
        choose(only_local, "gpt-4o")


def key(models: list[str]) -> KeyRecord:
    return KeyRecord(id="key_a", hint="tw-abc…wxyz", created_at=0, lineage="key_a",
                     hash="h", models=models)


@pytest.mark.parametrize(("entries", "name", "ok"), [
    (["openai/*"], "gpt-4o-mini-2024-07-18", True),  # by the alias serving it
    (["openai/*"], "openai/o3", True),
    (["openai/*"], "claude-haiku-4-5", False),
    (["gpt-4o"], "gpt-4o-2024-08-06", True),  # a plain name admits its snapshots
    (["gpt-4o"], "openai/gpt-4o-2024-08-06", True),
    (["gpt-4o"], "gpt-4o-mini", False),  # ... not another model of its family
    (["gpt-4o"], "gpt-4o-mini-2024-07-18", False),
    (["openai/gpt-4o"], "gpt-4o", True),
    (["claude-*"], "anthropic/claude-sonnet-4-5-20250929", True),
    (["claude-*"], "gpt-4o", False),
])
def test_a_keys_allowed_models_take_patterns_and_snapshots(entries: list[str], name: str,
                                                           ok: bool) -> None:
    r = routes({"models": {k: v for k, v in CONFIG["models"].items() if k != "gpt-4o"}})
    if ok:
        choose(r, name, key(entries))
    else:
        with pytest.raises(Forbidden):
            choose(r, name, key(entries))


def test_allow_list_entries() -> None:
    assert allows("gpt-4", ("gpt-4-0613",)) and not allows("gpt-4", ("gpt-4o",))
    assert allows("*", ("anything",)) and not allows("x*", ("",))


@pytest.mark.parametrize(("models", "problem"), [
    ({"open*ai/*": {"deployments": [dep("openai")]}}, "one '*', at its end"),
    ({"openai/*x": {"deployments": [dep("openai")]}}, "one '*', at its end"),
    ({"fixed": {"deployments": [dep("openai", "gpt-*")]}}, "this alias has no '*'"),
    ({"openai/*": {"deployments": [dep("openai", "*-*")]}}, "at most one '*'"),
    ({"a": {"deployments": [dep("openai", "gpt-4o")], "fallbacks": ["openai/x"]}},
     "is not a configured model"),
])
def test_the_configuration_checks_wildcards(models: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as got:
        parse({"models": models}, env={})
    assert problem in str(got.value)


def test_an_alias_may_not_point_at_a_pattern_but_a_fallback_may_be_a_served_name() -> None:
    with pytest.raises(ConfigError):
        parse({"models": {"openai/*": {"deployments": [dep("openai")]}},
               "aliases": {"x": "openai/*"}}, env={})
    with pytest.raises(ConfigError):
        parse({"models": {"openai/*": {"deployments": [dep("openai")]},
                          "a": {"deployments": [dep("openai", "x")],
                                "fallbacks": ["openai/*"]}}}, env={})
    cfg = parse({"models": {"openai/*": {"deployments": [dep("openai")]},
                            "a": {"deployments": [dep("openai", "x")],
                                  "fallbacks": ["gpt-4o-mini"]}},
                 "rate_limits": {"models": {"openai/*": {"rpm": 10}}}}, env={})
    r = Routes(cfg, Router({}))
    assert r.resolve("a").chain[1].deployments[0].model == "gpt-4o-mini"
