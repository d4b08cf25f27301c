"""The output guards on an answer: the schema a request asked for (asked again, then
refused), PII in the reply, and the input's placeholders put back — on canned answers,
with `resend` and `discard` recorded."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.unit.fakes import DEP, answer, request, stream, text_of, usage
from tollway.config import GuardsConfig
from tollway.errors import InvalidOutput
from tollway.guards import answer as output_guards
from tollway.guards import pii
from tollway.guards.policy import GuardBlocked, GuardPolicy, GuardRecord, resolve
from tollway.types import Answer, ChatRequest

SCHEMA = {"type": "json_schema", "json_schema": {"name": "count", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
VALID, INVALID = '{"n": 1}', '{"n": "one"}'


def policy(**guards: Any) -> GuardPolicy:
    return resolve(GuardsConfig(**guards))


def json_request() -> ChatRequest:
    return request("count", response_format=SCHEMA)


class Resender:
    """`resend` answering from a queue, and `discard` recording what it was given."""

    def __init__(self, *answers: Answer) -> None:
        self.queue = list(answers)
        self.sent = 0
        self.discarded: list[Answer] = []

    async def resend(self) -> Answer:
        self.sent += 1
        return self.queue.pop(0)

    async def discard(self, a: Answer) -> None:
        self.discarded.append(a)


async def checked(req: ChatRequest, p: GuardPolicy, first: Answer, again: Resender,
                  record: GuardRecord | None = None) -> tuple[Answer, GuardRecord]:
    record = record or GuardRecord(policy=p)
    got = await output_guards.checked(req, p, record, first, again.resend, again.discard)
    return got, record


@pytest.mark.parametrize(("response_format", "n"), [
    (None, 1), ({"type": "text"}, 1), ({"type": "json_object"}, 3), (SCHEMA, 3)])
def test_attempts_reserve_every_schema_retry(response_format: dict[str, Any] | None,
                                             n: int) -> None:
    req = request("hi", response_format=response_format)
    assert output_guards.attempts(req, policy(schema_retries=2)) == n


# The schema asked for.

async def test_a_valid_first_answer_passes_untouched() -> None:
    first = answer(VALID)
    assert first.reply is not None
    sent = copy.deepcopy(first.reply.body)
    again = Resender()
    got, record = await checked(json_request(), policy(), first, again)
    assert got is first and got.reply is not None and got.reply.body == sent
    assert (again.sent, again.discarded, record.actions) == (0, [], [])


async def test_an_invalid_answer_is_discarded_and_asked_for_again() -> None:
    first, second = answer(INVALID), answer(VALID)
    again = Resender(second)
    got, record = await checked(json_request(), policy(schema_retries=1), first, again)
    assert got is second and again.sent == 1 and again.discarded == [first]
    assert record.actions == ["schema:retried:1"]


async def test_still_invalid_after_the_retries_is_refused_and_every_attempt_discarded() -> None:
    attempts = [answer(INVALID), answer("not JSON at all"), answer(INVALID)]
    again, record = Resender(*attempts[1:]), GuardRecord()
    with pytest.raises(InvalidOutput) as got:
        await checked(json_request(), policy(schema_retries=2), attempts[0], again, record)
    assert got.value.status == 502 and "after 3 attempt(s)" in got.value.message
    assert again.discarded == attempts and again.sent == 2
    assert record.actions == ["schema:refused"]


async def test_an_answer_cut_by_max_tokens_is_refused_as_truncated() -> None:
    attempts = [answer('{"n": '), answer('{"n": 1')]
    for a in attempts:
        assert a.reply is not None
        a.reply.body["choices"][0]["finish_reason"] = "length"
    with pytest.raises(InvalidOutput) as got:
        await checked(json_request(), policy(schema_retries=1), attempts[0],
                      Resender(attempts[1]))
    assert got.value.status == 502 and got.value.code == "output_truncated"
    assert "cut off by max_tokens (finish_reason 'length')" in got.value.message
    with pytest.raises(InvalidOutput) as wrong:  # complete, but not the schema
        await checked(json_request(), policy(schema_retries=0), answer(INVALID), Resender())
    assert wrong.value.code == "schema_mismatch"


async def test_a_stream_is_read_whole_checked_and_replayed_with_the_same_text() -> None:
    original = stream(['{"n"', ': 1}'], used=usage(5, 3))
    first = Answer(DEP, stream=original)
    got, record = await checked(json_request(), policy(), first, Resender())
    assert got.stream is not None and got.stream is not original
    assert got.stream.received is original.received and got.stream.usage == usage(5, 3)
    assert await text_of(got.stream) == VALID
    assert record.actions == []


# PII in the reply.

EMAIL = "jane.doe@example.com"


@pytest.mark.parametrize(("mode", "sent"), [
    ("redact", "Write to [EMAIL_1] today"), ("log", f"Write to {EMAIL} today")])
async def test_output_pii_in_a_json_reply(mode: str, sent: str) -> None:
    got, record = await checked(request("hi"), policy(pii_output=mode),
                                answer(f"Write to {EMAIL} today"), Resender())
    assert got.reply is not None
    assert got.reply.body["choices"][0]["message"]["content"] == sent
    assert record.actions == [f"pii_output:{mode}:email"]


async def test_output_pii_blocked_is_withheld_with_502() -> None:
    with pytest.raises(GuardBlocked) as got:
        await checked(request("hi"), policy(pii_output="block"), answer(f"Mail {EMAIL}"),
                      Resender())
    assert got.value.status == 502 and EMAIL not in got.value.message


# Placeholders put back.

def restoring() -> GuardRecord:
    placeholders = pii.Placeholders()
    assert placeholders.for_value("email", EMAIL, "") == "[EMAIL_1]"
    return GuardRecord(placeholders=placeholders)


def test_restore_puts_the_originals_back_in_a_reply() -> None:
    got = output_guards.restore(answer("Hello [EMAIL_1]."), restoring())
    assert got.reply is not None
    assert got.reply.body["choices"][0]["message"]["content"] == f"Hello {EMAIL}."


async def test_restore_puts_the_originals_back_in_a_stream_even_when_split() -> None:
    got = output_guards.restore(Answer(DEP, stream=stream(["Hello [EMA", "IL_1], bye"])),
                                restoring())
    assert got.stream is not None
    assert await text_of(got.stream) == f"Hello {EMAIL}, bye"


def test_without_placeholders_nothing_is_restored() -> None:
    a = Answer(DEP, stream=stream(["Hello [EMAIL_1]"]))
    assert a.stream is not None
    frames = a.stream.frames
    got = output_guards.restore(a, GuardRecord())
    assert got.stream is not None and got.stream.frames is frames


async def test_a_finished_streams_output_pii_is_logged() -> None:
    record = GuardRecord(policy=policy(pii_output="redact"))
    a = Answer(DEP, stream=stream(["Write to ", EMAIL]))
    assert a.stream is not None and output_guards.wants_stream_log(record)
    assert await text_of(a.stream) == f"Write to {EMAIL}"  # it has reached the client
    await output_guards.log_stream(a, record)
    assert record.actions == ["pii_output:log:email"]
    assert not output_guards.wants_stream_log(GuardRecord(policy=policy()))
