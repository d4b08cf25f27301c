"""History policies as pure planning: the window keeps the system prompt, the current
turn and whole tool exchanges; summaries are found by the prefix they cover."""

from __future__ import annotations

import random

import pytest

from tollway.accounting.tokens import REPLY_PRIMING, count_messages, message_costs
from tollway.config import HistoryConfig, ModelHistoryConfig
from tollway.conversation import history
from tollway.errors import InvalidRequest
from tollway.types import FunctionCall, Message, ToolCall

SYSTEM = Message(role="system", content="You are a terse assistant for a bicycle shop.")


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(["wheel", "spoke", "brake", "chain", "gear", "tyre", "42",
                                "frame", "saddle", "pedal"]) for _ in range(n))


def conversation(rng: random.Random, turns: int) -> list[Message]:
    """System, then user/assistant turns; some answers go through a tool call."""
    out = [SYSTEM]
    for t in range(turns):
        out.append(Message(role="user", content=words(rng, rng.randint(5, 120))))
        if rng.random() < 0.3:
            calls = [ToolCall(id=f"call_{t}_{k}", function=FunctionCall(
                name="stock", arguments=f'{{"sku": {k}}}')) for k in range(rng.randint(1, 3))]
            out.append(Message(role="assistant", tool_calls=calls))
            out += [Message(role="tool", tool_call_id=c.id, content=words(rng, 20))
                    for c in calls]
        out.append(Message(role="assistant", content=words(rng, rng.randint(5, 80))))
    out.append(Message(role="user", content=words(rng, rng.randint(5, 60))))
    return out


def weighed(messages: list[Message]) -> tuple[history.Layout, list[int], int]:
    """A history's layout, its turns' token costs and the pinned messages' cost."""
    lay = history.layout(messages)
    return lay, message_costs(lay.rest), sum(message_costs(lay.pinned))


def apply_window(messages: list[Message], budget: int, step: int = 0) -> history.Kept:
    lay, costs, pinned = weighed(messages)
    return history.window(lay, costs, pinned, budget, REPLY_PRIMING, step)


def tool_pairs_whole(messages: list[Message]) -> bool:
    """Every tool result follows its call, and every call is followed by its results."""
    open_calls: set[str] = set()
    for m in messages:
        if m.role == "tool":
            if m.tool_call_id not in open_calls:
                return False
            open_calls.discard(m.tool_call_id)
        else:
            if open_calls:
                return False
            open_calls = {c.id for c in m.tool_calls or ()}
    return not open_calls


@pytest.mark.parametrize("stepped", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_the_window_keeps_the_prompt_within_budget_plus_one_turn(seed: int,
                                                                 stepped: bool) -> None:
    rng = random.Random(seed)
    messages = conversation(rng, rng.randint(1, 40))
    budget = rng.choice([200, 500, 1000, 2000])
    kept = apply_window(messages, budget, budget // 2 if stepped else 0)
    sent = kept.messages
    assert kept.sent_tokens == count_messages(sent)
    assert sent[0] == SYSTEM and sent[-1] == messages[-1]
    current = count_messages([SYSTEM, messages[-1]])
    assert kept.sent_tokens <= max(budget, current)
    assert tool_pairs_whole(sent)
    assert sent[1].role == "user"
    # Contiguous: what is kept is the tail of the history.
    assert sent[1:] == messages[len(messages) - len(sent) + 1:]
    # Nothing more would have fitted: the next older unit would break the budget.
    assert kept.full_tokens == count_messages(messages)
    assert kept.history_tokens == kept.sent_tokens - REPLY_PRIMING - message_costs(
        [messages[-1]])[0]


def test_a_window_larger_than_the_history_sends_it_all() -> None:
    messages = conversation(random.Random(7), 5)
    kept = apply_window(messages, 100_000)
    assert kept.messages == messages and kept.sent_tokens == kept.full_tokens


def test_the_current_turn_goes_whole_even_past_the_budget() -> None:
    """The latest user message and the tool exchange answering it are one turn."""
    call = ToolCall(id="c1", function=FunctionCall(name="stock", arguments="{}"))
    messages = [SYSTEM, Message(role="user", content="old " * 50),
                Message(role="assistant", content="old answer"),
                Message(role="user", content="Is the red frame in stock? " * 20),
                Message(role="assistant", tool_calls=[call]),
                Message(role="tool", tool_call_id="c1", content="3 left")]
    kept = apply_window(messages, 10)
    assert kept.messages == [SYSTEM, *messages[3:]]


def test_a_history_without_a_user_message_keeps_its_last_unit() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="stock", arguments="{}"))
    messages = [SYSTEM, Message(role="assistant", content="a " * 300),
                Message(role="assistant", tool_calls=[call]),
                Message(role="tool", tool_call_id="c1", content="3 left")]
    kept = apply_window(messages, 50)
    assert kept.messages == [SYSTEM, *messages[2:]]


def test_summary_planning_folds_older_turns_and_keeps_recent_ones() -> None:
    messages = conversation(random.Random(3), 30)
    lay, costs, pinned = weighed(messages)
    rule = history.resolve(HistoryConfig(policy="summarise", summarise_above=1500,
                                         keep_recent_tokens=600), None, None)
    fold = history.plan_summary(lay, costs, pinned, REPLY_PRIMING, 0, 0, rule)
    assert fold is not None and fold.start == 0 and 0 < fold.end <= lay.current
    assert lay.rest[fold.end].role == "user"
    assert sum(costs[fold.end:]) <= 600 or fold.end == lay.current
    # With that summary in place (100 tokens), nothing more to fold until it grows.
    assert history.plan_summary(lay, costs, pinned, REPLY_PRIMING, fold.end, 100, rule) is None
    note = Message(role="user", content="summary")
    kept = history.summarised(lay, costs, pinned, REPLY_PRIMING, fold.end, note, 10)
    assert kept.messages == [SYSTEM, note, *lay.rest[fold.end:]]


def test_a_fold_smaller_than_a_summary_is_not_worth_a_call() -> None:
    """A threshold below the summary's own size must not summarise every turn."""
    messages = conversation(random.Random(4), 12)
    lay, costs, pinned = weighed(messages)
    tiny = history.resolve(HistoryConfig(policy="summarise", summarise_above=50,
                                         keep_recent_tokens=0, summary_max_tokens=400),
                           None, None)
    fold = history.plan_summary(lay, costs, pinned, REPLY_PRIMING, 0, 0, tiny)
    assert fold is not None and sum(costs[:fold.end]) >= 400
    # The next turn adds a reply and a question: far less than a summary's 400 tokens.
    after = history.plan_summary(lay, costs, pinned, REPLY_PRIMING, lay.starts[-1], 400, tiny)
    assert after is None


def test_prefix_hashes_depend_only_on_the_prefix() -> None:
    messages = conversation(random.Random(5), 10)
    longer = [*messages[:-1], Message(role="assistant", content="more"),
              Message(role="user", content="and more")]
    a = history.prefix_hashes(history.layout(messages), "m|400")
    b = history.prefix_hashes(history.layout(longer), "m|400")
    shared = set(a) & set(b)
    assert shared and all(a[i] == b[i] for i in shared)
    assert len(set(a.values())) == len(a)
    assert history.prefix_hashes(history.layout(messages), "other|400") != a


def test_resolution_order_is_config_then_alias_then_request() -> None:
    cfg = HistoryConfig(policy="window", window_tokens=3000, keep_recent_tokens=1000)
    alias = ModelHistoryConfig(window_tokens=2000)
    assert history.resolve(cfg, alias, None).window_tokens == 2000
    rule = history.resolve(cfg, alias, history.ask_of("summarize", "800"))
    assert (rule.policy, rule.window_tokens, rule.summarise_above,
            rule.keep_recent_tokens) == ("summarise", 800, 800, 400)
    assert history.ask_of(None, None) is None


@pytest.mark.parametrize(("policy", "tokens", "param"), [
    ("everything", None, "x-tollway-history"), (None, "lots", "x-tollway-history-tokens"),
    (None, "0", "x-tollway-history-tokens")])
def test_bad_history_headers_are_named(policy: str | None, tokens: str | None,
                                       param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        history.ask_of(policy, tokens)
    assert e.value.param == param and param in e.value.message


def cut_of(kept: history.Kept, messages: list[Message]) -> int:
    """Where the kept history starts in the whole one."""
    return len(messages) - len(kept.messages) + 1


@pytest.mark.parametrize("seed", range(10))
def test_a_stepped_window_keeps_the_same_prefix_for_several_turns(seed: int) -> None:
    """Turn after turn, the stepped window moves its cut rarely and in large jumps (so
    the provider's prompt cache serves the resent prefix); the one-unit slide moves it
    nearly every turn once the window is full."""
    rng = random.Random(seed)
    whole = conversation(rng, 100)
    users = [i for i, m in enumerate(whole) if m.role == "user"]
    slid = stepped = 0
    last_slide = last_step = 1
    for u in users[20:]:
        messages = whole[:u + 1]  # the conversation up to this turn's question
        slide_cut = cut_of(apply_window(messages, 3000), messages)
        step_kept = apply_window(messages, 3000, 1500)
        step_cut = cut_of(step_kept, messages)
        assert step_kept.sent_tokens <= max(3000, count_messages([SYSTEM, messages[-1]]))
        slid += slide_cut != last_slide
        stepped += step_cut != last_step
        last_slide, last_step = slide_cut, step_cut
    assert stepped * 4 <= slid, (stepped, slid)


def test_the_step_is_configurable_and_checked() -> None:
    from tollway.config.history import check_history
    from tollway.errors import ConfigError

    cfg = HistoryConfig(policy="window", window_step=0.25)
    assert history.resolve(cfg, ModelHistoryConfig(window_step=0), None).window_step == 0
    assert history.resolve(cfg, None, None).window_step == 0.25
    with pytest.raises(ConfigError, match="window_step"):
        check_history(HistoryConfig(window_step=1.5), {}, lambda _: True)
def test_harder_summarises_above_the_lower_threshold_whatever_the_policy() -> None:
    window = history.resolve(HistoryConfig(policy="window"), None, None)
    rule = history.harder(window, 1000)
    assert (rule.policy, rule.summarise_above, rule.keep_recent_tokens) == ("summarise", 1000,
                                                                            500)
    summarising = history.resolve(HistoryConfig(policy="summarise", summarise_above=600),
                                  None, None)
    assert history.harder(summarising, 1000).summarise_above == 600  # already lower
