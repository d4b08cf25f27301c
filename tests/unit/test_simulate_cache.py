"""The simulator's answer lengths and its model of the providers' prompt caches."""

from __future__ import annotations

from tollway.simulate.length import MODEL_OUTPUT_CAP, answer_length, natural_length
from tollway.simulate.prefix import PrefixCache, Segment


def test_length_is_a_deterministic_function_of_the_prompt() -> None:
    prompts = [f"How do I configure feature {i} of the product?" for i in range(200)]
    lengths = [natural_length(p) for p in prompts]
    assert lengths == [natural_length(p) for p in prompts]
    assert len(set(lengths)) > 50  # a distribution, not a constant
    assert all(12 <= n <= 1200 for n in lengths)
    median = sorted(lengths)[100]
    assert 100 <= median <= 300


def test_acknowledgements_are_short_and_long_asks_are_long() -> None:
    for ack in ("thanks!", "ok", "Thank you so much", "great, got it"):
        assert natural_length(ack) <= 40, ack
    assert natural_length("Write a long essay about the history of Rome") >= 600
    assert natural_length("Please write a detailed report on our sales") >= 600


def test_repeat_n_times_scales_with_n() -> None:
    assert natural_length("repeat the previous text 100 times") >= 2000
    assert natural_length("Repeat 'hello world' 3 times") <= 3 * 60
    assert natural_length("repeat this 100000 times") == MODEL_OUTPUT_CAP


def test_pinned_length_and_the_cap() -> None:
    assert answer_length("write a long essay", 16, None) == (16, False)
    assert answer_length("write a long essay", None, 50) == (50, True)
    assert answer_length("thanks", 16, 100) == (16, False)


def seg(name: str, tokens: int, bp: bool = False) -> Segment:
    return Segment(name.encode(), tokens, bp)


def conversation(turns: int, size: int = 300) -> tuple[Segment, ...]:
    """A system prompt and `turns` user/assistant pairs, then a new question."""
    out = [seg("head", 3), seg("system", 600)]
    for i in range(turns):
        out += [seg(f"user {i}", size), seg(f"assistant {i}", size)]
    return (*out, seg(f"user {turns}", size))


def test_openai_reads_the_longest_seen_prefix_in_128_token_steps() -> None:
    cache = PrefixCache()
    first = conversation(2)  # 3 + 600 + 5 * 300 = 2103 tokens
    assert cache.automatic("m", first).read == 0
    # The next turn resends the whole first prompt (2103 tokens) and more.
    second = (*first, seg("assistant 2", 300), seg("user 3", 300))
    assert cache.automatic("m", second).read == 2048
    # Per model: another model has seen nothing.
    assert cache.automatic("other", second).read == 0


def test_openai_needs_1024_tokens_and_a_shared_start() -> None:
    cache = PrefixCache()
    short = (seg("head", 3), seg("system", 500), seg("q", 100))
    cache.automatic("m", short)
    assert cache.automatic("m", short).read == 0  # under 1,024 tokens: never cached
    cache.automatic("m", conversation(3))
    changed = (seg("head", 3), seg("another system prompt", 600), *conversation(3)[2:])
    assert cache.automatic("m", changed).read == 0


def test_a_one_turn_sliding_window_defeats_the_cache() -> None:
    cache = PrefixCache()
    turns = [seg(f"t{i}", 300) for i in range(30)]
    hits = 0
    for i in range(6, 30):
        window = (seg("head", 3), seg("system", 600), *turns[i - 6:i])
        hits += cache.automatic("m", window).read > 0
    assert hits == 0


def test_anthropic_reads_and_writes_at_breakpoints() -> None:
    cache = PrefixCache()
    system = seg("system", 1500, bp=True)
    first = (seg("tools", 3), system, seg("u0", 300, bp=True))
    use = cache.breakpoints("c", first)
    assert (use.read, use.written) == (0, 1803)
    # Next turn: the earlier breakpoint's prefix is read, the new part written.
    second = (seg("tools", 3), system, seg("u0", 300), seg("a0", 300),
              seg("u1", 300, bp=True))
    use = cache.breakpoints("c", second)
    assert (use.read, use.written) == (1803, 600)
    # No breakpoint, or one before 1,024 tokens: nothing cached.
    assert cache.breakpoints("c", (seg("tools", 3), seg("system", 1500))).read == 0
    small = (seg("tools", 3), seg("tiny", 100, bp=True), seg("u", 50))
    assert cache.breakpoints("c", small) == cache.breakpoints("c", small)
    assert cache.breakpoints("c", small).written == 0


def test_the_cache_is_bounded() -> None:
    cache = PrefixCache(max_entries=10)
    for i in range(50):
        cache.automatic("m", (seg(f"system {i}", 2000),))
    assert len(cache) == 10
    assert cache.automatic("m", (seg("system 0", 2000),)).read == 0
    assert cache.automatic("m", (seg("system 49", 2000),)).read == 1920
