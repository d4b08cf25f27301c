"""The bundled price table, name normalisation, and the cost arithmetic."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources

import msgspec
import pytest
import yaml

from tollway.accounting import prices
from tollway.accounting.prices import (
    UNLIMITED,
    Price,
    PriceTable,
    cost,
    cost_pico,
    format_usd,
    load_table,
    max_output_within,
    price_from_config,
    worst_case,
)
from tollway.config import PriceConfig
from tollway.types import Usage

TABLE = load_table()
BUNDLED = TABLE.models()
RAW = yaml.safe_load(
    resources.files("tollway.accounting").joinpath("prices.yaml").read_text())

REQUIRED = [
    "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
    "gpt-4o", "gpt-4o-mini", "o3", "o3-mini", "o4-mini", "o1", "o1-mini", "gpt-4-turbo",
    "gpt-4", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-3-large",
    "claude-opus-4-5", "claude-opus-4-1", "claude-opus-4-0", "claude-sonnet-4-5",
    "claude-sonnet-4-0", "claude-3-7-sonnet", "claude-haiku-4-5", "claude-3-5-haiku",
    "claude-3-haiku", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
    "gemini-2.0-flash", "gemini-2.0-flash-lite",
]


def _pico_exact(usd_per_million: float) -> Decimal:
    return Decimal(repr(usd_per_million)) * 1_000_000


def expected_pico(u: Usage, p: Price, *, batch: bool = False) -> Decimal:
    """The formula, written out independently in exact decimal arithmetic."""
    plain = u.prompt_tokens - u.cached_tokens - u.cache_write_tokens
    if batch:
        scale = (Decimal(repr(p.batch_input)) / Decimal(repr(p.input)) if p.input
                 else Decimal(0))
        inp, out = _pico_exact(p.batch_input), _pico_exact(p.batch_output)
        cached, write = _pico_exact(p.cached_input) * scale, _pico_exact(p.cache_write) * scale
    else:
        inp, out = _pico_exact(p.input), _pico_exact(p.output)
        cached, write = _pico_exact(p.cached_input), _pico_exact(p.cache_write)
    return (plain * inp + u.cached_tokens * cached + u.cache_write_tokens * write
            + u.completion_tokens * out)


# --- the data ---------------------------------------------------------------------

def test_file_is_dated_and_sourced() -> None:
    assert TABLE.updated is not None and TABLE.updated.year >= 2025
    assert set(RAW["source"]) == {"openai", "anthropic", "google"}
    assert all(len(text) > 40 for text in RAW["source"].values())


def test_every_required_model_is_priced() -> None:
    assert [m for m in REQUIRED if m not in BUNDLED] == []


def test_every_openai_and_anthropic_model_in_the_table_has_its_provider() -> None:
    # The zero-setup default serves them through `openai/*` and `anthropic/*` by it.
    for name, entry in RAW["models"].items():
        assert TABLE.provider(name) == entry["provider"], name
    assert TABLE.provider("gpt-4o-mini-2024-07-18") == "openai"
    assert TABLE.provider("claude-3-5-haiku-20241022") == "anthropic"
    assert TABLE.provider("o3-mini-2025-01-31") == "openai"
    assert TABLE.provider("gpt-9-turbo") == "openai"  # by its family's name
    assert TABLE.provider("claude-next") == "anthropic"
    assert TABLE.provider("llama-3-70b") is None and TABLE.provider("o10") is None


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_model_prices_are_consistent(name: str) -> None:
    p = BUNDLED[name]
    if RAW["models"][name]["provider"] == "local":  # the bundled model costs nothing
        assert (p.input, p.output) == (0, 0)
        return
    assert p.input > 0 and p.output >= 0
    assert p.cached_input <= p.input
    assert p.cache_write >= p.input
    # Every provider in the table discounts batch work exactly 50%.
    assert p.batch_input == pytest.approx(p.input / 2)
    assert p.batch_output == pytest.approx(p.output / 2)
    for rate in (p.input, p.output, p.cached_input, p.cache_write, p.batch_input,
                 p.batch_output):
        # At most 6 decimals per 1M tokens: a whole number of pico-dollars per token.
        assert _pico_exact(rate) == int(_pico_exact(rate)), rate
    if p.context_window is not None:
        assert p.context_window >= 4096
    if p.max_output_tokens is not None:
        assert 0 < p.max_output_tokens <= (p.context_window or p.max_output_tokens)


@pytest.mark.parametrize("name", sorted(m for m, e in RAW["models"].items()
                                        if e["provider"] == "anthropic"))
def test_anthropic_cache_multipliers(name: str) -> None:
    p = BUNDLED[name]
    if name == "claude-3-haiku":  # predates the 0.1x / 1.25x rule: 0.03 read, 0.30 write
        assert (p.cached_input, p.cache_write) == (0.03, 0.30)
        return
    assert p.cached_input == pytest.approx(p.input * 0.1)
    assert p.cache_write == pytest.approx(p.input * 1.25)


def test_entries_have_known_fields_and_providers() -> None:
    for name, entry in RAW["models"].items():
        assert entry["provider"] in ("openai", "anthropic", "google", "local"), name


def test_aliases_do_not_shadow_models() -> None:
    for name, entry in RAW["models"].items():
        for alias in entry.get("aliases", []):
            assert alias not in RAW["models"]
            assert TABLE.get(alias) is BUNDLED[name]


def test_bad_bundle_field_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"provider": "x", "input": 1, "output": 1, "cahced_input": 1},
                        prices._Entry)


# --- name normalisation -----------------------------------------------------------

@pytest.mark.parametrize(
    ("asked", "canonical"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        (" gpt-4o ", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4.1-nano", "gpt-4.1-nano"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("o3-2025-04-16", "o3"),
        ("o1-2024-12-17", "o1"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4-0"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4-0"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro"),
        ("google/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
    ],
)
def test_names_normalise(asked: str, canonical: str) -> None:
    assert TABLE.get(asked) is BUNDLED[canonical]


@pytest.mark.parametrize(
    "asked",
    [
        "gpt-4o-mini-fast",  # an unknown variant is not its base model
        "gpt-4.1-nano2",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",  # fine-tunes cost more
        "gpt-4-32k-0613",
        "gemini-2.5-flash-preview-05-20",  # previews had their own prices
        "azure/gpt-4o",
        "gpt-4o-2024",
        "llama-3.1-405",
        "",
    ],
)
def test_unknown_names_are_not_guessed(asked: str) -> None:
    assert TABLE.get(asked) is None


def test_longer_names_never_match_shorter_models() -> None:
    assert TABLE.get("gpt-4o-mini-2024-07-18") is not TABLE.get("gpt-4o")
    assert TABLE.get("gpt-4.1-nano") is not TABLE.get("gpt-4.1")
    assert TABLE.get("o3-mini") is not TABLE.get("o3")
    assert TABLE.get("gemini-2.5-flash-lite") is not TABLE.get("gemini-2.5-flash")


def test_lookups_are_cached_misses_included() -> None:
    table = load_table()
    calls: list[str] = []
    find = table._find

    def counting(model: str) -> Price | None:
        calls.append(model)
        return find(model)

    table._find = counting  # type: ignore[method-assign]
    for _ in range(3):
        assert table.get("gpt-4o-2024-08-06") == BUNDLED["gpt-4o"]
        assert table.get("no-such-model") is None
    assert calls == ["gpt-4o-2024-08-06", "no-such-model"]


def test_cache_is_bounded() -> None:
    table = PriceTable({"m": BUNDLED["gpt-4o"]})
    for i in range(prices._CACHE_MAX + 10):
        table.get(f"x{i}")
    assert len(table._cache) <= prices._CACHE_MAX
    assert table.get("m") is BUNDLED["gpt-4o"]


# --- overrides --------------------------------------------------------------------

def test_override_wins_and_resolves_its_own_defaults() -> None:
    table = load_table({"gpt-4o": PriceConfig(input=1.0, output=2.0)})
    p = table.get("gpt-4o-2024-08-06")
    assert p is not None
    assert (p.input, p.output, p.cached_input, p.cache_write) == (1.0, 2.0, 1.0, 1.0)
    assert (p.batch_input, p.batch_output) == (0.5, 1.0)
    # The bundled context figures still describe the model.
    assert (p.context_window, p.max_output_tokens) == (128000, 16384)
    # The bundled table itself is untouched.
    assert load_table().get("gpt-4o") == BUNDLED["gpt-4o"]


def test_override_extends_with_new_names() -> None:
    own = PriceConfig(input=0.2, output=0.4, cached_input=0.05, cache_write=0.3,
                      batch_input=0.15, batch_output=0.35)
    table = load_table({"My-Local-Model": own})
    p = table.get("my-local-model")
    assert p == Price(input=0.2, output=0.4, cached_input=0.05, cache_write=0.3,
                      batch_input=0.15, batch_output=0.35)
    assert table.get("openai/my-local-model") is p
    assert table.get("gpt-4o") == BUNDLED["gpt-4o"]


def test_override_of_a_model_reaches_its_aliases_but_not_the_reverse() -> None:
    table = load_table({"gpt-4-turbo": PriceConfig(input=1.0, output=1.0),
                        "claude-opus-4": PriceConfig(input=2.0, output=2.0)})
    turbo = table.get("gpt-4-turbo-preview")
    assert turbo is not None and turbo.input == 1.0
    alias = table.get("claude-opus-4-20250514")
    assert alias is not None and alias.input == 2.0
    assert table.get("claude-opus-4-0") == BUNDLED["claude-opus-4-0"]


def test_price_from_config_defaults() -> None:
    p = price_from_config(PriceConfig(input=3.0, output=15.0))
    assert p == Price(input=3.0, output=15.0, cached_input=3.0, cache_write=3.0,
                      batch_input=1.5, batch_output=7.5)


# --- cost -------------------------------------------------------------------------

def test_openai_style_usage_with_cache_and_reasoning() -> None:
    u = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400,
              reasoning_tokens=300)
    # 600 uncached x 2.50 + 400 cached x 1.25 + 500 output (reasoning inside) x 10.00
    assert cost(u, BUNDLED["gpt-4o"]) == pytest.approx((600 * 2.5 + 400 * 1.25 + 500 * 10) / 1e6)
    assert cost_pico(u, BUNDLED["gpt-4o"]) == 7_000_000_000
    no_reasoning = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    assert cost(no_reasoning, BUNDLED["gpt-4o"]) == cost(u, BUNDLED["gpt-4o"])


def test_anthropic_style_usage_with_cache_reads_and_writes() -> None:
    u = Usage(prompt_tokens=10_000, completion_tokens=200, cached_tokens=6000,
              cache_write_tokens=3000)
    # 1000 plain x 3.00 + 6000 read x 0.30 + 3000 written x 3.75 + 200 x 15.00
    assert cost_pico(u, BUNDLED["claude-sonnet-4-5"]) == 19_050_000_000
    assert cost(u, BUNDLED["claude-sonnet-4-5"]) == 0.01905


def test_batch_prices_and_cache_in_batch() -> None:
    u = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=200)
    # 800 x 0.625 + 200 x 0.0625 (cached, batch-discounted too) + 100 x 5.00
    assert cost(u, BUNDLED["gpt-5"], batch=True) == 0.0010125
    a = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=500,
              cache_write_tokens=300)
    # 200 x 1.50 + 500 x 0.15 + 300 x 1.875 + 100 x 7.50: the multipliers stack
    assert cost_pico(a, BUNDLED["claude-sonnet-4-5"], batch=True) == 1_687_500_000


def test_inconsistent_usage_never_goes_negative() -> None:
    u = Usage(prompt_tokens=10, cached_tokens=50, completion_tokens=1)
    assert cost_pico(u, BUNDLED["gpt-4o"]) == 50 * 1_250_000 + 10_000_000


def test_costs_are_exact_and_add_up() -> None:
    one = Usage(prompt_tokens=1)
    assert cost_pico(one, BUNDLED["gpt-4o-mini"]) == 150_000
    assert format_usd(cost(one, BUNDLED["gpt-4o-mini"])) == "0.00000015"
    many = Usage(prompt_tokens=7, completion_tokens=3)
    total = sum(cost_pico(many, BUNDLED["gemini-2.0-flash-lite"]) for _ in range(1_000))
    assert total == 1_000 * (7 * 75_000 + 3 * 300_000)


def test_zero_usage_costs_nothing() -> None:
    assert cost(Usage(), BUNDLED["claude-opus-4-1"]) == 0.0


SAMPLE = Usage(prompt_tokens=123_456, completion_tokens=7_891, cached_tokens=23_456,
               cache_write_tokens=10_000, reasoning_tokens=1_234)


@pytest.mark.parametrize("name", sorted(BUNDLED))
@pytest.mark.parametrize("batch", [False, True])
def test_every_model_costs_the_formula(name: str, batch: bool) -> None:
    p = BUNDLED[name]
    want = expected_pico(SAMPLE, p, batch=batch)
    assert cost_pico(SAMPLE, p, batch=batch) == want
    assert cost(SAMPLE, p, batch=batch) == pytest.approx(float(want) / 1e12, rel=1e-15)


# --- worst case and the output that fits --------------------------------------------

def test_worst_case_has_no_cache_discount() -> None:
    assert worst_case(1000, 500, BUNDLED["gpt-4o"]) == 0.0075
    assert worst_case(0, 0, BUNDLED["gpt-4o"]) == 0.0


def test_worst_case_prices_input_as_a_cache_write_when_dearer() -> None:
    # Anthropic cache writes cost 1.25x input: 1000 x 3.75 + 100 x 15.00
    assert worst_case(1000, 100, BUNDLED["claude-sonnet-4-5"]) == 0.00525


def test_max_output_within_fits_exactly() -> None:
    p = BUNDLED["gpt-4o"]
    n = max_output_within(0.01, 1000, p)
    assert n == 750
    assert worst_case(1000, n, p) <= 0.01 < worst_case(1000, n + 1, p)


@pytest.mark.parametrize("name", sorted(n for n, p in BUNDLED.items() if p.output > 0))
def test_max_output_within_is_the_largest_that_fits(name: str) -> None:
    p, budget, n_in = BUNDLED[name], 1.0, 2_000
    n = max_output_within(budget, n_in, p)
    assert n > 0
    assert worst_case(n_in, n, p) <= budget < worst_case(n_in, n + 1, p)


def test_max_output_within_when_the_input_alone_is_over() -> None:
    p = BUNDLED["gpt-4o"]
    assert max_output_within(0.001, 1000, p) == 0  # the input costs 0.0025
    assert max_output_within(0.0025, 1000, p) == 0  # exactly the input: nothing left
    assert max_output_within(0.0, 0, p) == 0
    assert max_output_within(-1.0, 0, p) == 0


def test_max_output_within_free_prices() -> None:
    free = Price(input=0, output=0, cached_input=0, cache_write=0, batch_input=0,
                 batch_output=0)
    assert worst_case(10**6, 10**6, free) == 0.0
    assert max_output_within(0.0, 10**6, free) == UNLIMITED
    embed = BUNDLED["text-embedding-3-small"]
    assert max_output_within(1.0, 1000, embed) == UNLIMITED
    assert max_output_within(1e-9, 1000, embed) == 0


# --- format_usd -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1e-9, "0"),
        (1e-8, "0.00000001"),
        (1.5e-7, "0.00000015"),
        (0.1 + 0.2, "0.3"),
        (0.0075, "0.0075"),
        (2.0, "2"),
        (12.5, "12.5"),
        (123.456789123, "123.45678912"),
        (1_000_000.0, "1000000"),
    ],
)
def test_format_usd(value: float, text: str) -> None:
    assert format_usd(value) == text
    assert "e" not in format_usd(value)
