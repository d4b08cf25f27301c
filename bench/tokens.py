"""Token counting: throughput of our counter next to raw tiktoken and bpe_openai, the
latency count_request adds to a request, and how far the o200k estimate is from the
bundled local model's own tokenizer.

    .venv/bin/python bench/tokens.py           # ~1 min -> docs/benchmarks/tokens.md
    .venv/bin/python bench/tokens.py --quick   # fewer iterations -> bench/results/
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cli
import report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for corpora/, the corpus the tests count too

from corpora.token_corpus import corpus, corpus_kinds  # noqa: E402

from tollway.accounting import tokens  # noqa: E402
from tollway.wire.openai import parse_chat_request  # noqa: E402

with warnings.catch_warnings():  # bpe_openai reads its data with a deprecated call on import
    warnings.simplefilter("ignore", DeprecationWarning)
    import bpe_openai._bindings as bpe_openai_native

ENCODINGS = {"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}
TARGET_TOKENS = 4000
TURNS = 20


# -- throughput ------------------------------------------------------------------------


def timed(fn: Callable[[str], object], docs: list[str]) -> float:
    t = time.perf_counter()
    for d in docs:
        fn(d)
    return time.perf_counter() - t


def throughput(docs: list[str], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Million tokens/s per implementation and encoding, one figure per repeat. Our
    counter is measured cold (caches cleared first: every text new) and warm (every
    text seen before, as history is in a conversation)."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, model in ENCODINGS.items():
        enc = tokens.encoding(name)
        native = bpe_openai_native.tokenizer_for_encoding(name)
        total = sum(len(enc.encode_ordinary(d)) for d in docs)

        def ours(d: str, model: str = model) -> int:
            return tokens.count_text(d, model)

        impls: dict[str, Callable[[str], object]] = {
            "count_text, cold": ours, "count_text, warm": ours,
            "tiktoken encode_ordinary": enc.encode_ordinary,
            "bpe_openai encode": native.encode, "bpe_openai count": native.count,
        }
        rates: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(repeats):
            for label, fn in impls.items():  # interleaved: drift hits all alike
                if label.endswith("cold"):
                    tokens.clear_caches()
                rates[label].append(total / timed(fn, docs) / 1e6)
        out[name] = rates
        cli.log(f"{name}: " + ", ".join(f"{k} {statistics.median(v):.2f}"
                                    for k, v in rates.items()) + " M tokens/s")
    return out


# -- latency ---------------------------------------------------------------------------

_WORDS_TEXT = ("the of and to in is that for it as with was on be by this are or from at an "
          "which have not but they his all were when there can more one been if will "
          "request gateway budget token price cache stream model tool reply order city "
          "weather search result customer invoice shipment account")
_WORDS = _WORDS_TEXT.split()

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}},
    {"type": "function", "function": {
        "name": "search_orders", "description": "Find a customer's orders",
        "parameters": {"type": "object", "properties": {
            "customer_id": {"type": "string"}, "status": {"type": "string",
                                                          "enum": ["open", "shipped"]},
            "limit": {"type": "integer", "description": "At most this many"}}}}},
    {"type": "function", "function": {
        "name": "create_ticket", "description": "Open a support ticket",
        "parameters": {"type": "object", "required": ["title"], "properties": {
            "title": {"type": "string"}, "body": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}}}}},
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def conversation(words_per_message: int, seed: int = 1) -> dict[str, Any]:
    """System prompt, then TURNS user turns: every third answered through a tool call and
    its result, the others in text."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": sentence(rng, 60)}]
    for turn in range(TURNS):
        messages.append({"role": "user", "content": sentence(rng, words_per_message)})
        if turn % 3 == 0:
            call = {"id": f"call_{turn}", "type": "function", "function": {
                "name": "search_orders",
                "arguments": json.dumps({"customer_id": f"c{turn}", "status": "open"})}}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": f"call_{turn}",
                             "content": sentence(rng, words_per_message)})
        messages.append({"role": "assistant", "content": sentence(rng, words_per_message)})
    return {"model": "gpt-4o", "messages": messages, "tools": TOOLS}


def sized_conversation() -> tuple[dict[str, Any], int]:
    """The conversation with message lengths chosen to total about TARGET_TOKENS."""
    for words in range(5, 200):
        body = conversation(words)
        n = tokens.count_request(parse_chat_request(json.dumps(body).encode()), "gpt-4o")
        if n >= TARGET_TOKENS:
            return body, n
    raise AssertionError("unreachable")


def latencies(bodies: list[bytes], cold: bool) -> list[float]:
    """µs of count_request per request, each parsed fresh from JSON (new string objects,
    as a server sees them); parsing is not timed."""
    out = []
    for raw in bodies:
        req = parse_chat_request(raw)
        if cold:
            tokens.clear_caches()
            tokens.count_text("warm-up", "gpt-4o")  # the counter itself, not the texts
        t = time.perf_counter()
        tokens.count_request(req, "gpt-4o")
        out.append((time.perf_counter() - t) * 1e6)
    return out


def latency(iterations: int, repeats: int) -> tuple[int, int, dict[str, list[list[float]]]]:
    """Per case, the µs of every request, one list per repeat."""
    body, n_tokens = sized_conversation()
    raw = json.dumps(body).encode()
    chars = sum(len(m.get("content") or "") for m in body["messages"])

    def next_turn(i: int) -> bytes:
        turn = {"role": "user", "content": f"Follow-up number {i}: " + sentence(
            random.Random(i), 40)}
        return json.dumps({**body, "messages": [*body["messages"], turn]}).encode()

    turns = [next_turn(i) for i in range(iterations * repeats)]
    cases: dict[str, Callable[[int], list[float]]] = {
        "cold: every text new": lambda r: latencies([raw] * max(iterations // 10, 50),
                                                    cold=True),
        "next turn: history seen, one new message": lambda r: latencies(
            turns[r * iterations:(r + 1) * iterations], cold=False),
        "repeat: identical request seen": lambda r: latencies([raw] * iterations, cold=False),
    }
    results: dict[str, list[list[float]]] = {label: [] for label in cases}
    for r in range(repeats):
        tokens.clear_caches()
        tokens.count_request(parse_chat_request(raw), "gpt-4o")  # the history, seen once
        for label, case in cases.items():
            results[label].append(case(r))
    return n_tokens, chars, results


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


# -- estimate for the local model ------------------------------------------------------


def local_model_ratio(docs: list[str]) -> dict[str, float] | None:
    """o200k count / SmolLM2's own count over the corpus, when the model is installed."""
    try:
        from llama_cpp import Llama

        from tollway.providers.local import bundled_model_path
    except ImportError:
        return None
    path = bundled_model_path()
    if path is None:
        return None
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    theirs = [len(vocab.tokenize(d.encode(), add_bos=False, special=False)) for d in docs]
    ours = [tokens.count_text(d, "smollm2") for d in docs]
    rel = sorted((o - t) / t for o, t in zip(ours, theirs, strict=True) if t)
    prose = [i for i, kind in enumerate(corpus_kinds(len(docs))) if kind == "prose"]
    return {"aggregate": sum(ours) / sum(theirs),
            "prose": sum(ours[i] for i in prose) / sum(theirs[i] for i in prose),
            "median": statistics.median(rel), "p5": rel[len(rel) // 20],
            "p95": rel[-(len(rel) // 20)]}


# -- report ----------------------------------------------------------------------------


def render(docs: list[str], rates: dict[str, dict[str, list[float]]],
           lat: tuple[int, int, dict[str, list[list[float]]]], repeats: int,
           local: dict[str, float] | None) -> str:
    n_tokens, chars, lats = lat
    chars_total = sum(len(d) for d in docs)
    rate_rows = [(label, *(report.spread(rates[name][label], "{:.2f}") for name in ENCODINGS))
                 for label in next(iter(rates.values()))]
    lat_rows = [(label, report.spread([statistics.median(v) for v in runs], "{:,.1f}"),
                 report.spread([p99(v) for v in runs], "{:,.1f}"), f"{len(runs[0]):,}")
                for label, runs in lats.items()]
    local_text = "The bundled local model is not installed: unmeasured."
    if local is not None:
        local_text = textwrap.fill(
            "Against SmolLM2-135M's own tokenizer (llama.cpp, vocabulary only), the o200k "
            f"count is {local['aggregate']:.2f}x its count over the whole corpus and "
            f"{local['prose']:.2f}x on its English-prose documents; per document the "
            f"relative error has median {local['median']:+.0%}, 5th percentile "
            f"{local['p5']:+.0%}, 95th {local['p95']:+.0%}. So for that model the estimate "
            "runs low (digits and non-Latin scripts split much finer there); the local "
            "provider reports llama.cpp's own count for billing.", width=88)
    return f"""**Throughput**, million tokens/s on one core over the test corpus
(`corpora/token_corpus.py`: {len(docs):,} documents, {chars_total:,} characters: code,
many scripts, emoji, numbers, whitespace runs, long repeats, random Unicode and bytes),
median [min .. max] of {repeats} repeats. *cold*: caches cleared, every text new; *warm*:
every text counted before, as a conversation's history is on each turn.

{report.table(["counter", *ENCODINGS], rate_rows)}

**Added latency** of `count_request` on a {TURNS}-turn conversation with 3 tools, tool
calls and tool results ({n_tokens:,} prompt tokens, o200k; {chars:,} characters of
content), each request parsed fresh from JSON (parsing not timed); µs, median [min .. max]
of {repeats} repeats of the per-repeat median and p99:

{report.table(["case", "median", "p99", "requests per repeat"], lat_rows)}

**Estimate for non-OpenAI models** (`count_request` counts them with o200k_base).
{local_text}
No Claude or Gemini tokenizer is available offline: their error is unmeasured.
"""


def headline(rates: dict[str, dict[str, list[float]]],
             lat: tuple[int, int, dict[str, list[list[float]]]]) -> str:
    o200k = rates["o200k_base"]
    n_tokens, _, lats = lat

    def median_us(case: str) -> float:
        return statistics.median(statistics.median(v) for v in lats[case])

    return (f"o200k counting at {statistics.median(o200k['count_text, cold']):.1f} M "
            "tokens/s cold (tiktoken "
            f"{statistics.median(o200k['tiktoken encode_ordinary']):.1f}); counting a "
            f"{n_tokens:,}-token request adds {median_us('cold: every text new'):.0f} µs "
            f"cold, {median_us('next turn: history seen, one new message'):.0f} µs for a "
            "conversation's next turn.")


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--repeats", type=int, help="throughput repeats (default 5, quick 3)")
    args = ap.parse_args(argv)
    repeats = max(args.repeats or (3 if args.quick else 5), 3)
    docs = corpus()
    for name in ENCODINGS:
        tokens.encoding(name)  # load outside the timings
    rates = throughput(docs, repeats)
    lat = latency(500 if args.quick else 2000, repeats)
    cli.log(", ".join(f"{k}: median {statistics.median(runs[0]):.1f} µs, p99 "
                      f"{p99(runs[0]):.1f} µs" for k, runs in lat[2].items()))
    local = local_model_ratio(docs)
    report.write(args, title="Token counting", headline=headline(rates, lat),
                 body=render(docs, rates, lat, repeats, local),
                 libraries=("tiktoken", "bpe-openai"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
