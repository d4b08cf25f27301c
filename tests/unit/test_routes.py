"""Where a model name leads (`Routes`): the tier, the alias, whether the key may use it,
and the route's prices and chain — built from a configuration, nothing called."""

from __future__ import annotations

from typing import Any

import pytest

from tollway.accounting.prices import load_table, price_from_config
from tollway.accounting.settlement import Releases
from tollway.config import PriceConfig, parse
from tollway.errors import Forbidden, InvalidRequest, ModelNotFound
from tollway.gateway.routes import Routes
from tollway.keys import KeyRecord
from tollway.routing.router import Router

CONFIG = {
    "models": {
        "big": {"deployments": [
            {"provider": "openai", "model": "gpt-4o", "api_key": "k",
             "price": {"input": 1.0, "output": 2.0}},
            {"provider": "openai", "model": "gpt-4o", "api_key": "k2"}],
            "fallbacks": ["cheap"]},
        "small": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini",
                                   "api_key": "k", "pacing": {"rpm": 60}}]},
        "house": {"deployments": [{"provider": "local", "model": "house-model"}]},
    },
    "aliases": {"cheap": "small"},
    "tiers": {"fast": {"model": "small", "max_tokens": 100}, "smart": {"model": "big"}},
}


def routes() -> Routes:
    return Routes(parse(CONFIG, env={}), Router({}))


def key(**kw: Any) -> KeyRecord:
    return KeyRecord(id="key_a", hint="tw-abc…wxyz", created_at=0, lineage="key_a",
                     hash="h", **kw)


@pytest.mark.parametrize(("model", "header", "alias", "tier"), [
    ("tier:smart", "fast", "small", "fast"),  # the header beats the model name
    ("tier:smart", None, "big", "smart"),
    ("big", "fast", "small", "fast"),
    ("cheap", None, "small", None),  # an alias of an alias
])
def test_the_tier_and_alias_a_name_leads_to(model: str, header: str | None, alias: str,
                                            tier: str | None) -> None:
    route, choice = routes().choose(model, header, None, False, Releases())
    assert (route.alias, choice.tier) == (alias, tier)


def test_a_tiers_output_cap_comes_with_its_choice() -> None:
    assert routes().choose("tier:fast", None, None, False, Releases())[1].max_tokens == 100


def test_an_unknown_model_is_a_404_listing_the_models() -> None:
    with pytest.raises(ModelNotFound) as got:
        routes().choose("gpt-5", None, None, False, Releases())
    e = got.value
    assert (e.status, e.code, e.param) == (404, "model_not_found", "model")
    assert "Available models: big, cheap, house, small, tier:fast, tier:smart." in e.message


def test_an_unknown_tier_is_refused() -> None:
    with pytest.raises(InvalidRequest) as got:
        routes().choose("big", "huge", None, False, Releases())
    assert got.value.code == "unknown_tier"


def test_a_key_limited_to_other_models_gets_403_unless_the_call_is_internal() -> None:
    limited = key(models=["small"])
    r = routes()
    with pytest.raises(Forbidden) as got:
        r.choose("big", None, limited, False, Releases())
    assert got.value.status == 403 and "may use: small" in got.value.message
    assert r.choose("big", None, limited, True,
                    Releases())[0].alias == "big"  # the gateway's own call
    # The alias it resolves to is allowed too, however it is asked for.
    assert r.choose("cheap", None, limited, False, Releases())[0].alias == "small"
    assert r.choose("tier:fast", None, limited, False, Releases())[0].alias == "small"


def test_prices_are_per_deployment_a_configured_one_over_the_table() -> None:
    r = routes()
    own, table = r.resolve("big").deployments
    assert own.model == table.model == "gpt-4o"
    assert r.resolve("big").price(own) == price_from_config(PriceConfig(input=1.0, output=2.0))
    assert r.price(table) == load_table().get("gpt-4o") and r.price(table) is not None
    (house,) = r.resolve("house").deployments
    assert r.price(house) is None


def test_the_chain_is_the_pool_then_its_fallbacks_pools() -> None:
    r = routes()
    big, small = r.resolve("big"), r.resolve("small")
    assert big.chain == [big.pool, small.pool] and big.chain[1] is small.pool
    assert small.chain == [small.pool]
    assert [d.model for d in big.pool.deployments] == ["gpt-4o", "gpt-4o"]


def test_a_route_is_paced_when_any_deployment_on_its_chain_is() -> None:
    r = routes()
    paced = r.router.paced
    assert paced(r.resolve("small").chain) and paced(r.resolve("big").chain)  # big falls back
    assert not paced(r.resolve("house").chain)


def test_every_model_deployed_once() -> None:
    assert routes().models() == ["gpt-4o", "gpt-4o-mini", "house-model"]


def test_a_tier_header_does_not_open_a_model_the_key_may_not_use() -> None:
    # The key may use "small" only; the header sends its request to "big".
    with pytest.raises(Forbidden):
        routes().choose("small", "smart", key(models=["small"]), False, Releases())
