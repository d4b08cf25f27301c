"""`tollway simulate`'s prompt caching and answer lengths, as the official SDKs read
them: OpenAI's automatic prefix cache (chat and Responses), Anthropic's cache_control
breakpoints, and the per-model stats a replay prices from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.helpers.sim import SimHandle, start_simulator
from tollway.simulate.length import natural_length

SYSTEM = "You are the support assistant of Example Corp. " + " ".join(
    f"Policy {i}: refunds within {i} days need the order number and a receipt." for i in range(90))


@pytest.fixture(scope="module")
def module_sim() -> Iterator[SimHandle]:
    with start_simulator() as s:
        yield s


@pytest.fixture
def sim(module_sim: SimHandle) -> SimHandle:
    module_sim.reset()
    module_sim.config(output_tokens=16)
    return module_sim


def test_openai_reports_the_resent_prefix_as_cached(sim: SimHandle) -> None:
    client = openai.OpenAI(base_url=sim.openai_base, api_key="x", max_retries=0)
    messages: list[Any] = [{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": "How do refunds work?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert first.usage is not None and first.usage.prompt_tokens >= 1024
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "user", "content": "And exchanges?"}]
    second = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and cached % 128 == 0
    assert first.usage.prompt_tokens - 128 < cached <= first.usage.prompt_tokens
    # Another model has its own cache.
    other = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert other.usage is not None and other.usage.prompt_tokens_details is not None
    assert other.usage.prompt_tokens_details.cached_tokens == 0
    stats = sim.stats()["by_model"]
    assert stats["gpt-4o"] == {
        "requests": 2, "prompt_tokens": first.usage.prompt_tokens + second.usage.prompt_tokens,
        "cached_tokens": cached, "cache_write_tokens": 0, "completion_tokens": 32}
    assert stats["gpt-4o-mini"]["requests"] == 1
    # The reset forgets the cache.
    sim.reset()
    again = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == 0


def test_responses_reports_cached_input_tokens(sim: SimHandle) -> None:
    client = openai.OpenAI(base_url=sim.openai_base, api_key="x", max_retries=0)
    client.responses.create(model="gpt-4o", instructions=SYSTEM, input="Hello?")
    r = client.responses.create(model="gpt-4o", instructions=SYSTEM, input="Hello again?")
    assert r.usage is not None
    cached = r.usage.input_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0 and cached < r.usage.input_tokens


def test_anthropic_cache_control_reads_and_writes(sim: SimHandle) -> None:
    client = anthropic.Anthropic(base_url=sim.anthropic_base, api_key="x", max_retries=0)
    system: Any = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(model="claude-haiku-4-5", max_tokens=100, system=system,
                                   messages=[{"role": "user", "content": "Hi"}])
    written = first.usage.cache_creation_input_tokens
    assert written is not None and written >= 1024
    assert first.usage.cache_read_input_tokens == 0
    second = client.messages.create(model="claude-haiku-4-5", max_tokens=100, system=system,
                                    messages=[{"role": "user", "content": "Other question"}])
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    total = client.messages.count_tokens(model="claude-haiku-4-5", system=system, messages=[
        {"role": "user", "content": "Other question"}]).input_tokens
    assert second.usage.input_tokens + written == total
    # Without a breakpoint nothing is cached, however often the prompt is seen.
    plain = client.messages.create(model="claude-haiku-4-5", max_tokens=100, system=SYSTEM,
                                   messages=[{"role": "user", "content": "Hi"}])
    assert plain.usage.cache_read_input_tokens == 0
    assert plain.usage.cache_creation_input_tokens == 0
    by_model = sim.stats()["by_model"]["claude-haiku-4-5"]
    assert by_model["cached_tokens"] == written
    assert by_model["cache_write_tokens"] == written


def test_natural_lengths_unless_pinned(sim: SimHandle) -> None:
    client = openai.OpenAI(base_url=sim.openai_base, api_key="x", max_retries=0)

    def length(prompt: str, **kw: Any) -> int:
        r = client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": prompt}], **kw)
        assert r.usage is not None
        return r.usage.completion_tokens

    assert length("thanks!") == 16  # pinned by the fixture
    sim.config(output_tokens=None)
    assert length("thanks!") == natural_length("thanks!") <= 40
    question = "How do I reset my password?"
    assert length(question) == natural_length(question)
    assert length("repeat the previous text 100 times", max_tokens=500) == 500
    assert length("Write a long essay about refunds") >= 600
