"""The output guards on an answer, before it goes out:

- output asked for as JSON is checked against its schema and asked for again up to
  `schema_retries` times (a stream is read whole first, then replayed); each discarded
  attempt is handed to `discard` (it is paid for), and one still wrong is refused with
  502 — nothing invalid is passed on;
- PII in a JSON reply is logged, redacted or blocked (a stream's is only logged, when it
  has ended: `log_stream`, as its text has reached the client);
- values the input guard redacted are put back, when configured (`restore`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tollway.errors import InvalidOutput
from tollway.guards import output
from tollway.guards import policy as guard_policy
from tollway.guards import schema as schema_check
from tollway.types import Answer, ChatRequest
from tollway.wire import replay
from tollway.wire.sse import body_of

Resend = Callable[[], Awaitable[Answer]]  # the same request, sent again
Discard = Callable[[Answer], Awaitable[None]]  # an attempt paid for and thrown away


def attempts(req: ChatRequest, policy: guard_policy.GuardPolicy) -> int:
    """How many answers a request may cost: output that breaks its schema is asked for
    again, and every attempt is paid for (so every one is reserved)."""
    return 1 + policy.schema_retries if schema_check.wanted(req.response_format) else 1


def apply(req: ChatRequest, policy: guard_policy.GuardPolicy,
          record: guard_policy.GuardRecord) -> bool:
    """Is there anything to check or restore in this request's answer?"""
    return (policy.pii_output != "off" or record.placeholders is not None
            or schema_check.wanted(req.response_format))


async def checked(req: ChatRequest, policy: guard_policy.GuardPolicy,
                  record: guard_policy.GuardRecord, answer: Answer, resend: Resend,
                  discard: Discard) -> Answer:
    """The answer to send: schema-checked, PII-checked, placeholders restored."""
    if schema_check.wanted(req.response_format):
        answer = await _schema_checked(req, policy, record, answer, resend, discard)
    if answer.reply is not None and policy.pii_output != "off":
        for message, text in output.reply_texts(answer.reply.body):
            fixed = guard_policy.check_output(text or "", policy, record, stream=False)
            if fixed is not None:
                message["content"] = fixed
                # The caller gets the redacted chat view, never the upstream's own
                # Response object (a native Responses deployment's), which still has it.
                answer.reply.native = None
    return restore(answer, record)


async def _schema_checked(req: ChatRequest, policy: guard_policy.GuardPolicy,
                          record: guard_policy.GuardRecord, answer: Answer, resend: Resend,
                          discard: Discard) -> Answer:
    assert req.response_format is not None
    for attempt in range(policy.schema_retries + 1):
        if answer.stream is not None:
            await output.read_all(answer.stream.frames)
        body = body_of(answer)
        problem = (output.schema_error(body, req.response_format) if body is not None
                   else "the answer could not be read as a chat completion")
        cut = body is not None and output.truncated(body)
        if problem is None:
            if attempt:
                record.actions.append(f"schema:retried:{attempt}")
            if answer.stream is not None and body is not None:
                again = replay.stream(body, answer.model, answer.stream.usage)
                again.received = answer.stream.received
                answer.stream = again  # `assembled` stays: the same answer
            return answer
        await discard(answer)
        if attempt < policy.schema_retries:
            answer = await resend()
    record.actions.append("schema:refused")
    raise InvalidOutput(f"The model's answer did not match the requested "
                        f"response_format after {policy.schema_retries + 1} attempt(s): "
                        f"{problem}. Nothing invalid was passed on.",
                        code="output_truncated" if cut else None)


def restore(answer: Answer, record: guard_policy.GuardRecord) -> Answer:
    """Put redacted values back into the reply, when configured (such an answer is
    never cached)."""
    if record.placeholders is None or not record.placeholders.originals:
        return answer
    mapping = record.placeholders.originals
    if answer.reply is not None:
        output.restore_body(answer.reply.body, mapping)
    elif answer.stream is not None:
        answer.stream.frames = output.restore_frames(answer.stream.frames, mapping)
    return answer


def as_sent(body: dict[str, Any] | None, record: guard_policy.GuardRecord
            ) -> dict[str, Any] | None:
    """The reply as the client saw it (placeholders restored), to keep: a stream is
    restored only on its way out, so what it assembles to still has them."""
    if body is None or record.placeholders is None or not record.placeholders.originals:
        return body
    sent: dict[str, Any] = orjson.loads(orjson.dumps(body))  # a copy: the original stays
    output.restore_body(sent, record.placeholders.originals)
    return sent


def wants_stream_log(record: guard_policy.GuardRecord) -> bool:
    return record.policy is not None and record.policy.pii_output != "off"


async def log_stream(answer: Answer, record: guard_policy.GuardRecord) -> None:
    """The output PII check of a stream that has ended: logged only (it has been sent)."""
    body = body_of(answer)
    if body is not None and record.policy is not None:
        guard_policy.check_output("\n".join(t for _, t in output.reply_texts(body) if t),
                                  record.policy, record, stream=True)
