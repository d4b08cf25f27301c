"""The chat endpoints: POST a request in one dialect (OpenAI chat completions,
Anthropic Messages, OpenAI Responses: `server/responses.py`) -> `Gateway.chat` -> JSON or
SSE back, and `Gateway.finish` on every path.

Every dialect shares this path; a `Dialect` says how to parse a request and write
replies, streams and errors. A watcher cancels the handling task when the client
disconnects; the cancellation reaches the provider's stream, whose cleanup closes the
upstream connection, so the provider stops generating (and billing) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from tollway import tracing
from tollway.accounting.prices import format_usd
from tollway.accounting.settlement import Aborted, Answered, Failed, Outcome, Settlement
from tollway.cache.controls import ask_of
from tollway.config import ServerConfig
from tollway.conversation import history
from tollway.errors import TollwayError
from tollway.gateway import Gateway
from tollway.gateway.call import Asks, Call
from tollway.gateway.pipeline import Pipeline
from tollway.policy import limits as rate_limits
from tollway.policy.auth import Caller
from tollway.server.asgi import (
    ClientGone,
    DisconnectWatch,
    Edge,
    Headers,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    edge,
    json_bytes,
    read_body,
    send_json,
    send_sse,
)
from tollway.server.drain import Drain
from tollway.types import Answer, ChatRequest, EmbeddingRequest, Reply, ReplyStream
from tollway.wire import anthropic as anthropic_wire
from tollway.wire import openai as openai_wire
from tollway.wire.sse import iter_chunks

log = logging.getLogger("tollway")


R = TypeVar("R", bound=ChatRequest | EmbeddingRequest)


@dataclass(frozen=True, slots=True)
class Dialect(Generic[R]):
    """How one wire format reads a request and writes answers; the path is shared.
    `handle`: the request path it goes through (chat, or embeddings), of the pipeline
    the request began on."""

    parse: Callable[[bytes, ServerConfig], R]
    reply: Callable[[Reply], bytes]
    # A stream's frames, given the prompt's tokens when `counts_input` (it shows them
    # before the end: Anthropic's message_start).
    frames: Callable[[ReplyStream, int], AsyncGenerator[bytes, None]]
    stream_end: bytes
    stream_error: Callable[[TollwayError], bytes]  # an error after the stream began
    error: Callable[[TollwayError], bytes]
    handle: Callable[[Pipeline], Callable[[Call, R], Awaitable[Answer]]]
    counts_input: bool = False
    # A dialect whose answers depend on more than the reply (Responses: the parameters
    # the answer repeats, a stored response continued) binds one per request: it parses
    # the body itself, once the key is checked, and returns the request and the dialect
    # that answers it.
    bind: Callable[[Gateway, Call, bytes], Awaitable[tuple[R, Dialect[R]]]] | None = None
    # Given a JSON answer as written, before it is sent (Responses stores it there).
    kept: Callable[[bytes], Awaitable[None]] | None = None


class ChatEndpoint(Generic[R]):
    """A POST endpoint of the request path: chat in either dialect, or embeddings."""

    def __init__(self, gateway: Gateway, dialect: Dialect[R], drain: Drain) -> None:
        self.gateway = gateway
        self.dialect = dialect
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e = edge(scope)
        call = new_call(e, scope)
        if tracing.ON:  # the request's span: a child of the client's traceparent, if sent
            call.trace = tracing.begin(scope["headers"], scope["method"], scope["path"],
                                       call.request_id)
        gateway, task, dialect = self.gateway, asyncio.current_task(), self.dialect
        # The configuration it began under, to its end: a reload swaps the gateway's
        # pipeline, never the one a request is in (its routes price what it used).
        pipeline, server = gateway.pipeline, gateway.config.server
        watch: DisconnectWatch | None = None
        answer: Answer | None = None
        outcome: Outcome = Aborted()
        if task is not None:
            self.drain.running.add(task)
        try:
            if self.drain.draining:
                raise self.drain.refusal()
            checked = gateway.authenticate(e.api_key, call.caller, e.session)
            call.caller = await (tracing.traced("tollway.auth", checked) if tracing.ON
                                 else checked)
            call.asks = asks_of(e, call.asks)
            check_json_content_type(scope)
            body = await read_body(scope, receive, server.max_body_bytes)
            if dialect.bind is None:
                req = dialect.parse(body, server)
            else:
                req, dialect = await dialect.bind(gateway, call, body)
            watch = DisconnectWatch(receive)
            answer = await dialect.handle(pipeline)(call, req)
            outcome = await self._answer(call, answer, send, dialect, pipeline)
        except TollwayError as err:
            outcome = Failed(gateway.scrub(err), answer)
            await send_json(send, err.status, dialect.error(err),
                            [*answer_headers(call, answer), *err.headers()])
        except ClientGone:
            outcome = Aborted(answer)
        except Exception:  # a bug: answer 500 in the OpenAI shape, still account for it
            log.exception("internal error (%s)", call.request_id)
            error = TollwayError(f"Internal error; the request id is {call.request_id}.")
            outcome = Failed(error, answer)
            with contextlib.suppress(Exception):  # fails if the response had begun
                await send_json(send, 500, dialect.error(error),
                                answer_headers(call, answer))
        except asyncio.CancelledError:
            gone = watch is not None and watch.gone
            if not gone and not self.drain.cancelled(task):
                raise
            if task is not None:
                task.uncancel()
            if gone:
                outcome = Aborted(answer)
                log.info("client went away; upstream call cancelled (%s)", call.request_id)
            else:  # the drain's deadline: end it properly, as an error its SDK raises
                outcome = Failed(self.drain.ended(), answer, cut_off=True)
                await self._cut_off(call, answer, outcome.error, send, dialect)
        finally:
            if task is not None:
                self.drain.running.discard(task)
            if watch is not None:
                watch.finish()
            # Exactly once, on every path: settle the budget hold, write the ledger row.
            try:
                await pipeline.finish(call, outcome)
            finally:
                if call.trace is not None:  # after the row: its span carries what it says
                    tracing.end(call.trace)

    @staticmethod
    async def _count(call: Call, answer: Answer) -> int:
        if call.plan is not None and call.plan.input_tokens is not None:
            return call.plan.input_tokens
        return await call.count.of(answer.model) if call.count is not None else 0

    async def _cut_off(self, call: Call, answer: Answer | None, err: TollwayError,
                       send: Send, dialect: Dialect[R]) -> None:
        """A request the shutdown ended: a stream gets the dialect's error event as its
        last, anything else a 503."""
        with contextlib.suppress(Exception):  # the client may be gone too
            if answer is not None and answer.stream is not None:  # the stream had begun
                await send({"type": "http.response.body", "body": dialect.stream_error(err)})
            else:
                await send_json(send, err.status, dialect.error(err),
                                [*answer_headers(call, answer), *err.headers()])

    async def _answer(self, call: Call, answer: Answer, send: Send,
                      dialect: Dialect[R], pipeline: Pipeline) -> Outcome:
        """Send the answer: JSON with its cost in headers, or SSE with its cost in a
        trailer; a stream that fails after it began says so in-band."""
        gateway = self.gateway
        headers = answer_headers(call, answer)
        if answer.stream is None:
            assert answer.reply is not None
            s = await pipeline.priced(call, Answered(answer))
            body = dialect.reply(answer.reply)
            if dialect.kept is not None:
                await dialect.kept(body)
            await send_json(send, 200, body, headers + cost_headers(s))
            return Answered(answer)
        failed: list[TollwayError] = []

        async def end() -> bytes:
            s = await pipeline.priced(call, Answered(answer))
            return cost_trailer(s) + dialect.stream_end

        def error(err: TollwayError) -> bytes:
            failed.append(gateway.scrub(err))
            return dialect.stream_error(failed[0])

        if call.trace is not None:
            answer.stream.frames = tracing.finish_reasons(answer.stream.frames, call.trace)
        prompt = 0
        if dialect.counts_input:  # the upstream's figure, else ours
            prompt = answer.stream.input_tokens or await self._count(call, answer)
        await send_sse(send, dialect.frames(answer.stream, prompt), headers, end, error)
        return Failed(failed[0], answer) if failed else Answered(answer)


def new_call(e: Edge, scope: Scope) -> Call:
    """A request's record as the edge knows it: who it says it is, what it asks."""
    client = scope.get("client")
    return Call(e.request_id,
                caller=Caller(user=e.user, feature=e.feature, ip=client[0] if client else None),
                asks=Asks(tier=e.tier, conversation=e.conversation,
                          stored_conversation=e.stored_conversation))


def asks_of(e: Edge, asks: Asks) -> Asks:
    """With what the cache and history headers ask, once the key is checked (their
    400s come after a 401); most requests send none."""
    cache = ask_of(e.cache_control, e.cache_headers)
    hist = history.ask_of(e.history, e.history_tokens)
    if cache is None and hist is None:
        return asks
    return msgspec.structs.replace(asks, cache=cache, history=hist)


def answer_headers(call: Call, answer: Answer | None) -> Headers:
    h: Headers = [(b"x-request-id", call.request_id.encode())]
    plan, admission = call.plan, call.admission
    if answer is not None:
        h.append((b"x-tollway-model", answer.model.encode()))
        h.append((b"x-tollway-provider", answer.deployment.provider.encode()))
        if plan is not None and plan.input_tokens is not None:
            h.append((b"x-tollway-input-tokens-estimated", str(plan.input_tokens).encode()))
        if plan is not None and plan.ceiling is not None:
            h.append((b"x-tollway-max-cost-usd",
                      format_usd(plan.ceiling.worst_case_usd).encode()))
    if plan is not None:
        if plan.tier:
            h.append((b"x-tollway-tier", plan.tier.encode()))
        if plan.downgraded_from:
            h.append((b"x-tollway-downgraded-from", plan.downgraded_from.encode()))
        if plan.downgrade_reason:
            h.append((b"x-tollway-downgrade-reason", plan.downgrade_reason.encode()))
        if plan.route_reason:
            h.append((b"x-tollway-route-reason", plan.route_reason.encode()))
        if plan.degraded is not None:  # what a budget nearing its limit changed, and which
            h.append((b"x-tollway-degraded", plan.degraded.what().encode()))
            h.append((b"x-tollway-degrade-budget", plan.degraded.why().encode()))
        if plan.clamped:
            h.append((b"x-tollway-max-tokens-clamped", plan.clamped.encode()))
    if admission is not None:
        if admission.remaining_usd is not None:
            h.append((b"x-tollway-budget-remaining-usd",
                      format_usd(admission.remaining_usd).encode()))
        if admission.ticket is not None:
            h += rate_limits.headers(admission.ticket)
    if call.thread is not None:
        h.append((b"x-tollway-conversation", call.thread.id.encode()))
    if call.history is not None:
        h.append((b"x-tollway-history", call.history.policy.encode()))
        h.append((b"x-tollway-history-tokens", str(call.history.tokens).encode()))
        h.append((b"x-tollway-history-saved-tokens", str(call.history.saved_tokens).encode()))
    if call.guards is not None and (did := call.guards.summary()):  # never the text
        h.append((b"x-tollway-guards", did.encode()))
    if call.cache is not None:
        h.append((b"x-tollway-cache", call.cache.status.encode()))
        if answer is not None and call.cache.similarity is not None:
            h.append((b"x-tollway-cache-similarity", f"{call.cache.similarity:.4f}".encode()))
    return h


def cost_headers(s: Settlement) -> Headers:
    h: Headers = [(b"x-tollway-cost-usd",
                   b"unpriced" if s.cost_usd is None else format_usd(s.cost_usd).encode())]
    if s.usage is not None:
        h.append((b"x-tollway-input-tokens", str(s.usage.prompt_tokens).encode()))
        h.append((b"x-tollway-output-tokens", str(s.usage.completion_tokens).encode()))
    if s.saved_usd:
        h.append((b"x-tollway-saved-usd", format_usd(s.saved_usd).encode()))
    return h


def cost_trailer(s: Settlement) -> bytes:
    """Headers are long gone when a stream ends: its cost travels as an SSE comment,
    which SDKs and browsers ignore and curl shows."""
    usd = "unpriced" if s.cost_usd is None else format_usd(s.cost_usd)
    tokens = (f" input_tokens={s.usage.prompt_tokens} output_tokens={s.usage.completion_tokens}"
              if s.usage is not None else "")
    flags = " estimated=true" if s.estimated else ""
    if s.saved_usd:
        flags += f" saved_usd={format_usd(s.saved_usd)}"
    return f": tollway cost_usd={usd}{tokens}{flags}\n\n".encode()


def anthropic_frames(stream: ReplyStream, input_tokens: int) -> AsyncGenerator[bytes, None]:
    # The parsed request asks for usage, so the usage event reaches the translator
    # (Anthropic's message_delta carries it).
    return anthropic_wire.stream_to_anthropic(iter_chunks(stream.frames), stream.model,
                                              input_tokens)


OPENAI = Dialect(
    parse=lambda body, server: openai_wire.parse_chat_request(
        body, max_n=server.max_n, max_messages=server.max_messages),
    reply=lambda reply: json_bytes(reply.body),
    frames=lambda stream, _: stream.frames,  # already OpenAI events: forwarded as they are
    stream_end=openai_wire.SSE_DONE,
    stream_error=lambda e: openai_wire.sse_frame(e.body()),  # the OpenAI SDK raises on it
    error=lambda e: e.to_json(),
    handle=lambda pipeline: pipeline.chat,
)
ANTHROPIC = Dialect(
    parse=lambda body, server: anthropic_wire.parse_messages_request(body),
    reply=lambda reply: json_bytes(anthropic_wire.reply_to_anthropic(reply)),
    frames=anthropic_frames,
    stream_end=b"",
    stream_error=anthropic_wire.error_frame,
    error=anthropic_wire.error_body,
    handle=lambda pipeline: pipeline.chat,
    counts_input=True,
)
