"""Model prices and the arithmetic that turns token usage into dollars.

The bundled table (`prices.yaml`, dated and sourced) is read once; `Config.prices`
extends and overrides it. Prices are USD per 1M tokens.

Money is counted in integer pico-dollars (1e-12 USD). A price with up to 6 decimals per
1M tokens is a whole number of pico-dollars per token (0.075 $/1M = 75,000 p$/token), so
every cost is exact and sums of costs never drift; the float functions divide once at
the end. Ledgers that add up many requests should sum `cost_pico` instead.

Batch: every provider here discounts batch work 50%, and the discount applies to cached
and cache-write tokens too: Anthropic documents that batch and cache multipliers stack,
and OpenAI lists batch cached input at half the cached price for its current models. So
in batch the cache prices scale by batch_input / input. (For older OpenAI models whose
pricing page shows no batch cached price, this may under-price cached batch tokens.)
"""

from __future__ import annotations

import datetime
import re
import sys
from functools import cache
from importlib import resources

import msgspec
import msgspec.yaml

from tollway.config import PriceConfig
from tollway.config.wildcards import family_provider
from tollway.types import Usage

PICO_PER_USD = 10**12
# max_output_within() when output is free: any number of tokens fits.
UNLIMITED = sys.maxsize

_PREFIXES = ("openai/", "anthropic/", "gemini/", "google/", "models/")
# Suffixes naming a snapshot of the same model: -2024-08-06 (OpenAI), -20250929 or
# @20250929 (Anthropic, Vertex), -0613 (old OpenAI, month and day), -001 (Gemini),
# -latest. Only a whole suffix is removed and the rest must then match a name exactly,
# so gpt-4o-mini-2024-07-18 can only ever be gpt-4o-mini, never gpt-4o.
_SNAPSHOT = re.compile(
    r"(?:-20\d\d-\d\d-\d\d|[-@]20\d{6}|-(?:0[1-9]|1[0-2])[0-3]\d|-00\d|-latest)$")
# Lookups are memoised, misses included; names come from configuration, so this bound
# is only a guard.
_CACHE_MAX = 4096


class Price(msgspec.Struct, frozen=True):
    """USD per 1M tokens for one model, every optional price resolved."""

    input: float
    output: float
    cached_input: float
    cache_write: float
    batch_input: float
    batch_output: float
    context_window: int | None = None
    max_output_tokens: int | None = None
    # An embedding model's vector size, and whether a request may ask for fewer.
    dimensions: int | None = None
    shortens: bool = False


class _Entry(PriceConfig, kw_only=True, forbid_unknown_fields=True):
    """One model in prices.yaml: the prices a tollway.yaml override has, plus these."""

    provider: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    dimensions: int | None = None
    shortens: bool = False
    aliases: list[str] = []


class _Bundle(msgspec.Struct, forbid_unknown_fields=True):
    updated: datetime.date
    source: dict[str, str]
    models: dict[str, _Entry]


def price_from_config(p: PriceConfig, context_window: int | None = None,
                      max_output_tokens: int | None = None, dimensions: int | None = None,
                      shortens: bool = False) -> Price:
    """Resolve the optional prices: cached and cache-write default to input, batch to
    half the standard price."""
    return Price(
        input=p.input,
        output=p.output,
        cached_input=p.input if p.cached_input is None else p.cached_input,
        cache_write=p.input if p.cache_write is None else p.cache_write,
        batch_input=p.input / 2 if p.batch_input is None else p.batch_input,
        batch_output=p.output / 2 if p.batch_output is None else p.batch_output,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        dimensions=dimensions,
        shortens=shortens,
    )


def _entry_price(e: _Entry) -> Price:
    return price_from_config(e, e.context_window, e.max_output_tokens, e.dimensions,
                             e.shortens)


@cache
def _bundled() -> _Bundle:
    data = resources.files("tollway.accounting").joinpath("prices.yaml").read_bytes()
    return msgspec.yaml.decode(data, type=_Bundle)


def undated(name: str) -> str:
    """`name` without a snapshot suffix (gpt-4o-2024-08-06 -> gpt-4o), else as it is."""
    return _SNAPSHOT.sub("", name)


class PriceTable:
    """Model name -> Price (and the provider that sells it), with name normalisation
    and a lookup cache."""

    def __init__(self, prices: dict[str, Price], aliases: dict[str, str] | None = None,
                 updated: datetime.date | None = None,
                 providers: dict[str, str] | None = None) -> None:
        self._prices = {k.lower(): v for k, v in prices.items()}
        self._aliases = {k.lower(): v.lower() for k, v in (aliases or {}).items()}
        self._providers = {k.lower(): v for k, v in (providers or {}).items()}
        self._cache: dict[str, Price | None] = {}
        self.updated = updated

    def get(self, model: str) -> Price | None:
        """The price of `model`, or None when the table does not know it."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._find(model)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[model] = found
        return found

    def models(self) -> dict[str, Price]:
        """Every priced name (aliases excluded)."""
        return dict(self._prices)

    def provider(self, model: str) -> str | None:
        """Who sells `model` (or the family its snapshot belongs to): the bundled
        table's `provider`, else the family its name says (gpt-*, o1/o3/o4*,
        text-embedding-* are OpenAI's; claude-* Anthropic's); None when neither knows."""
        name = self._name(model)
        if name is not None and name in self._providers:
            return self._providers[name]
        return family_provider(model)

    def _name(self, model: str) -> str | None:
        """The table's own name for `model`, if it knows it."""
        for n in _candidates(model):
            if n in self._prices:
                return n
            if n in self._aliases and self._aliases[n] in self._prices:
                return self._aliases[n]
        return None

    def _exact(self, name: str) -> Price | None:
        found = self._prices.get(name)
        if found is None and name in self._aliases:
            found = self._prices.get(self._aliases[name])
        return found

    def _find(self, model: str) -> Price | None:
        for n in _candidates(model):
            found = self._exact(n)
            if found is not None:
                return found
        return None


def _candidates(model: str) -> list[str]:
    """The names `model` is looked up as, in order: as given, without a provider
    prefix, then each without a snapshot suffix."""
    name = model.strip().lower()
    names = [name]
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            names.append(name[len(prefix):])
            break
    for n in list(names):
        bare = _SNAPSHOT.sub("", n)
        if bare != n:
            names.append(bare)
    return names


def load_table(overrides: dict[str, PriceConfig] | None = None) -> PriceTable:
    """The bundled table plus `overrides` (Config.prices): an override replaces the
    bundled prices of its model (keeping its context and embedding figures), a new name
    extends."""
    bundle = _bundled()
    prices = {name.lower(): _entry_price(e) for name, e in bundle.models.items()}
    providers = {name.lower(): e.provider for name, e in bundle.models.items()}
    aliases = {a.lower(): name.lower() for name, e in bundle.models.items() for a in e.aliases}
    for name, cfg in (overrides or {}).items():
        key = name.strip().lower()
        base = prices.get(key) or prices.get(aliases.get(key, ""))
        if base is None:
            prices[key] = price_from_config(cfg)
        else:
            prices[key] = price_from_config(cfg, base.context_window, base.max_output_tokens,
                                            base.dimensions, base.shortens)
    return PriceTable(prices, aliases, bundle.updated, providers)


def _pico(usd_per_million: float) -> int:
    """USD per 1M tokens -> pico-dollars per token (exact for up to 6 decimals)."""
    return round(usd_per_million * 1_000_000)


def cost_pico(usage: Usage, price: Price, *, batch: bool = False) -> int:
    """What `usage` costs, in pico-dollars. prompt_tokens includes cached and
    cache-write tokens; completion_tokens includes reasoning, billed as output."""
    cached, written = usage.cached_tokens, usage.cache_write_tokens
    plain = max(usage.prompt_tokens - cached - written, 0)
    if batch:
        scale = price.batch_input / price.input if price.input else 1.0
        rates = (price.batch_input, price.cached_input * scale, price.cache_write * scale,
                 price.batch_output)
    else:
        rates = (price.input, price.cached_input, price.cache_write, price.output)
    inp, cached_rate, write_rate, out = (_pico(r) for r in rates)
    return (plain * inp + cached * cached_rate + written * write_rate
            + usage.completion_tokens * out)


def cost(usage: Usage, price: Price, *, batch: bool = False) -> float:
    """What `usage` costs, in USD."""
    return cost_pico(usage, price, batch=batch) / PICO_PER_USD


def _worst_input_rate(price: Price) -> int:
    # A cache write costs more than plain input (Anthropic: 1.25x), so the worst case
    # prices every input token at the dearer of the two; no cache-read discount.
    return _pico(max(price.input, price.cache_write))


def worst_case(input_tokens: int, max_output_tokens: int, price: Price) -> float:
    """The most a request can cost, in USD: all of its input uncached (or written to a
    cache, if that is dearer) and max_output_tokens of output."""
    total = input_tokens * _worst_input_rate(price) + max_output_tokens * _pico(price.output)
    return total / PICO_PER_USD


def max_output_within(budget_usd: float, input_tokens: int, price: Price) -> int:
    """The most output tokens whose worst case fits `budget_usd`: 0 when the input alone
    does not fit, UNLIMITED when output is free."""
    left = round(budget_usd * PICO_PER_USD) - input_tokens * _worst_input_rate(price)
    if left < 0:
        return 0
    out = _pico(price.output)
    return left // out if out > 0 else UNLIMITED


def format_usd(x: float) -> str:
    """Dollars for a header: up to 8 decimals, no exponent, trailing zeros trimmed."""
    text = f"{x:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
