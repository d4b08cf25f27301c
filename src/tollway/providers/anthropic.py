"""Anthropic Messages API: canonical (OpenAI-shaped) requests in, OpenAI-shaped
`chat.completion` replies and `chat.completion.chunk` streams out.

How OpenAI parameters land:
- system/developer messages (wherever they appear) -> top-level `system`, in order.
- consecutive same-role turns are merged; `tool` messages become user `tool_result`
  blocks, placed first in their turn as Anthropic requires.
- max_tokens / max_completion_tokens -> max_tokens; stop -> stop_sequences;
  user -> metadata.user_id; tool_choice and parallel_tool_calls=false -> tool_choice;
  response_format json_schema -> output_config.format (Anthropic structured outputs);
  a top-level `top_k` (from the Anthropic inbound wire) is forwarded.
- `cache_control` breakpoints: the caller's are kept; with none, the gateway adds its
  own on the system prompt and the history (`anthropic_cache`; `prompt_cache: false`
  turns that off).
- temperature/top_p are forwarded as given: the newest Claude models reject them, and
  the upstream's own 400 says so more precisely than a guess here could.

Parameters Anthropic has no equivalent for:
- dropped, because they cannot change what a correct answer looks like: seed, store,
  metadata, service_tier, prediction, modalities=["text"], logprobs=false,
  presence/frequency_penalty of 0, response_format {"type": "text"},
  parallel_tool_calls=true, a message's `name`.
- a 400 naming the parameter, because dropping them would return something the caller
  did not ask for (and failing over to another deployment would not help): n > 1,
  response_format json_object (no schema to constrain to), logprobs/top_logprobs,
  logit_bias, non-zero
  penalties, temperature above 1 (Anthropic's range is 0..1; rescaling would change
  behaviour silently), the legacy `function` role, audio/file-id parts, and any other
  field we do not know.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from functools import cache
from typing import Any

import orjson

from tollway.errors import InvalidRequest, UpstreamError
from tollway.providers import anthropic_batch, http
from tollway.providers.anthropic_cache import add_breakpoints
from tollway.providers.base import LineResult
from tollway.types import (
    ChatRequest,
    Chunk,
    ChunkStream,
    Deployment,
    EmbeddingRequest,
    Message,
    Reply,
    ReplyStream,
    Usage,
)
from tollway.wire import sse
from tollway.wire.anthropic_shapes import (
    dumps,
    finish_reason,
    split_data_url,
    tool_arguments,
    tool_choice_to_anthropic,
    tool_to_anthropic,
    url_to_source,
    usage_to_openai,
)

DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# Only used when called outside the gateway, which always sets a limit.
FALLBACK_MAX_TOKENS = 4096

# Extra (unmodelled) request fields that are safe to ignore, or ignorable at one value.
_HARMLESS_EXTRA = frozenset({"store", "metadata", "service_tier", "prediction"})
_FORWARDED_EXTRA = frozenset({"top_k"})


@cache
def _url(dep: Deployment) -> str:
    base = (dep.api_base or DEFAULT_BASE).rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def _count_url(dep: Deployment) -> str:
    return _url(dep) + "/count_tokens"


# What a count_tokens request may not hold (it counts the prompt, not an answer).
_NOT_COUNTED = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "metadata",
                "stream")


@cache
def _headers(dep: Deployment) -> dict[str, str]:
    h = {"content-type": "application/json", "anthropic-version": API_VERSION}
    if dep.api_key:
        h["x-api-key"] = dep.api_key
    h.update(dep.headers)  # e.g. anthropic-beta
    return h


# --- request -------------------------------------------------------------------------


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not supported by Anthropic models: {why}",
                          param=param, code="unsupported_parameter")


def _check_params(req: ChatRequest) -> None:
    if req.n is not None and req.n > 1:
        raise _unsupported("n", f"they return one choice per request (got n={req.n}); "
                           "send separate requests instead.")
    if req.temperature is not None and req.temperature > 1:
        raise _unsupported("temperature", f"the range is 0 to 1 (got {req.temperature}).")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise _unsupported(name, "there is no equivalent; omit it or set it to 0.")
    fmt = (req.response_format or {}).get("type", "text")
    if fmt not in ("text", "json_schema"):
        raise _unsupported("response_format", f"type {fmt!r} has no equivalent; use "
                           "'json_schema' with a schema, or describe the format in the prompt.")
    for key, value in req.extra.items():
        if key in _HARMLESS_EXTRA or key in _FORWARDED_EXTRA:
            continue
        if key in ("logprobs", "top_logprobs", "logit_bias") and not value:
            continue
        if key == "modalities" and value == ["text"]:
            continue
        raise _unsupported(key, "there is no equivalent in the Messages API.")


def _text_block(part: dict[str, Any]) -> dict[str, Any] | None:
    text = part.get("text")
    if not isinstance(text, str) or not text:
        return None  # Anthropic rejects empty text blocks
    block: dict[str, Any] = {"type": "text", "text": text}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _part_block(part: dict[str, Any], path: str) -> dict[str, Any] | None:
    """One OpenAI content part -> one Anthropic content block (None: nothing to send)."""
    kind = part.get("type")
    block: dict[str, Any]
    if kind == "text":
        return _text_block(part)
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str):
            raise InvalidRequest(f"{path}.image_url.url: expected a URL string.",
                                 param=f"{path}.image_url.url")
        block = {"type": "image", "source": url_to_source(url, f"{path}.image_url.url")}
    elif kind == "file":
        spec = part.get("file") or {}
        data = split_data_url(spec.get("file_data") or "")
        if data is None or data[0] != "application/pdf":
            raise _unsupported(f"{path}.file", "only PDFs sent inline as a base64 data: URL "
                               "in 'file_data' can be passed on (file ids cannot).")
        block = {"type": "document",
                 "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
    else:
        raise _unsupported(f"{path}.type", f"content parts of type {kind!r} cannot be sent.")
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _content_blocks(content: str | list[dict[str, Any]] | None,
                    path: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        if part.get("type") == "refusal":  # an assistant's earlier refusal: keep its words
            part = {"type": "text", "text": part.get("refusal")}
        block = _part_block(part, f"{path}.content[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _assistant_blocks(m: Message, path: str) -> list[dict[str, Any]]:
    blocks = _content_blocks(m.content, path)
    for call in m.tool_calls or []:
        # Broken arguments from an earlier turn are wrapped, not rejected: the
        # conversation already happened and must stay replayable.
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name,
                       "input": tool_arguments(call.function.arguments)})
    return blocks


def _tool_result(m: Message, path: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    if isinstance(m.content, str):
        if m.content:
            block["content"] = m.content
    elif m.content:
        block["content"] = _content_blocks(m.content, path)
    return block


def _system_and_turns(req: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        path = f"messages[{i}]"
        if m.role in ("system", "developer"):
            system.extend(_content_blocks(m.content, path))
            continue
        if m.role == "user":
            role, blocks = "user", _content_blocks(m.content, path)
        elif m.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(m, path)
        elif m.role == "tool":
            role, blocks = "user", [_tool_result(m, path)]
        else:
            raise _unsupported(f"{path}.role", "the legacy 'function' role is not "
                               "supported; use 'tools' and 'tool' messages.")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic needs alternating roles
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # tool results must lead their turn (stable sort)
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return system, turns


def messages_body(req: ChatRequest, model: str) -> dict[str, Any]:
    """The canonical request as an Anthropic Messages API request body."""
    _check_params(req)
    system, turns = _system_and_turns(req)
    limit = req.output_limit()
    out: dict[str, Any] = {"model": model, "messages": turns,
                           "max_tokens": FALLBACK_MAX_TOKENS if limit is None else limit}
    if system:
        # A plain string unless a block carries cache_control (then blocks are needed).
        plain = all("cache_control" not in b and b["type"] == "text" for b in system)
        out["system"] = "\n\n".join(b["text"] for b in system) if plain else system
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    if "top_k" in req.extra:
        out["top_k"] = req.extra["top_k"]
    if req.stop_list():
        out["stop_sequences"] = req.stop_list()
    if req.user:
        out["metadata"] = {"user_id": req.user}
    if req.tools:
        out["tools"] = [tool_to_anthropic(t, f"tools[{i}]") for i, t in enumerate(req.tools)]
        choice = tool_choice_to_anthropic(req.tool_choice, req.parallel_tool_calls)
        if choice is not None:
            out["tool_choice"] = choice
    elif req.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("'tool_choice' needs 'tools' to choose from.", param="tool_choice")
    output_format = _output_format(req.response_format)
    if output_format is not None:
        out["output_config"] = {"format": output_format}
    if req.stream:
        out["stream"] = True
    return out


def _output_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    if not fmt or fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format.json_schema.schema: a JSON schema object is "
                             "required.", param="response_format.json_schema.schema")
    return {"type": "json_schema", "schema": schema}


# --- response ------------------------------------------------------------------------


def chat_completion(msg: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic message object -> an OpenAI `chat.completion` object."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": dumps(block.get("input") or {})}})
        # thinking and server-tool blocks have no OpenAI form; we never ask for them.
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(texts) if texts or not calls else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                              "finish_reason": finish_reason(msg.get("stop_reason"))}
    if msg.get("stop_sequence"):
        choice["stop_reason"] = msg["stop_sequence"]
    return {"id": msg.get("id") or "", "object": "chat.completion",
            "created": int(time.time()), "model": msg.get("model") or model,
            "choices": [choice], "usage": usage_to_openai(msg.get("usage") or {})}


class StreamTranslator:
    """Anthropic stream events -> OpenAI chunks, one event at a time (pure; no I/O)."""

    def __init__(self, model: str, where: str) -> None:
        self.id = ""
        self.model = model
        self.where = where
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.done = False
        # Anthropic content-block index -> OpenAI tool_calls index.
        self._tools: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def feed(self, ev: dict[str, Any]) -> list[Chunk]:
        kind = ev.get("type")
        if kind == "message_start":
            msg = ev.get("message") or {}
            self.id = msg.get("id") or self.id
            self.model = msg.get("model") or self.model
            self.usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = ev.get("content_block") or {}
            if block.get("type") == "tool_use":
                n = self._tools[int(ev.get("index", 0))] = len(self._tools)
                return [self._chunk({"tool_calls": [{
                    "index": n, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = ev.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [self._chunk({"content": delta["text"]})]
            tool = self._tools.get(int(ev.get("index", 0)))
            if delta.get("type") == "input_json_delta" and tool is not None \
                    and delta.get("partial_json"):
                return [self._chunk({"tool_calls": [{
                    "index": tool, "function": {"arguments": delta["partial_json"]}}]})]
            return []  # thinking, signature and citation deltas have no OpenAI form
        if kind == "message_delta":
            # Usage here is cumulative: it replaces what message_start said.
            self.usage.update({k: v for k, v in (ev.get("usage") or {}).items()
                               if v is not None})
            d = ev.get("delta") or {}
            chunk = self._chunk({}, finish_reason(d.get("stop_reason")))
            if d.get("stop_sequence"):
                chunk["choices"][0]["stop_reason"] = d["stop_sequence"]
            return [chunk]
        if kind == "message_stop":
            self.done = True
            return [{"id": self.id, "object": "chat.completion.chunk",
                     "created": self.created, "model": self.model, "choices": [],
                     "usage": usage_to_openai(self.usage)}]
        if kind == "error":
            err = ev.get("error") or {}
            raise UpstreamError(f"Upstream {self.where} failed mid-stream: "
                                f"{err.get('type', 'error')}: {err.get('message', err)}")
        return []  # ping, content_block_stop, and event types added later


# --- provider ------------------------------------------------------------------------


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, transport: http.Transport) -> None:
        self.transport = transport

    async def close(self) -> None:
        """Nothing of its own: the transport is the gateway's."""

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        body = _request_body(req, dep)
        data, ratelimit = await self.transport.post_json(_url(dep), body, _headers(dep), dep)
        if data.get("type") == "error":
            raise UpstreamError(f"Upstream {http.where(dep)} answered with an error: "
                                f"{data.get('error', data)}")
        out = chat_completion(data, dep.model)
        return Reply(body=out, model=out["model"], usage=Usage.from_openai(out["usage"]),
                     ratelimit=ratelimit)

    async def embed(self, req: EmbeddingRequest, dep: Deployment) -> Reply:
        raise InvalidRequest("Anthropic has no embeddings API.", param="model",
                             code="model_not_supported")

    def batch_line(self, req: ChatRequest | EmbeddingRequest, dep: Deployment
                   ) -> tuple[str, bytes]:
        if isinstance(req, EmbeddingRequest):
            raise InvalidRequest("Anthropic has no embeddings API.", param="model",
                                 code="model_not_supported")
        return "/v1/messages", _request_body(req, dep)

    async def run_batch(self, dep: Deployment, endpoint: str,
                        lines: Sequence[tuple[str, bytes]], poll_s: float
                        ) -> dict[str, LineResult]:
        """Lines through Anthropic's Message Batches API (`anthropic_batch.py`)."""
        return await anthropic_batch.run(self.transport, dep, _url(dep) + "/batches",
                                         _headers(dep), lines, poll_s)

    def batch_reply(self, body: dict[str, Any], dep: Deployment) -> Reply:
        out = chat_completion(body, dep.model)
        return Reply(body=out, model=out["model"], usage=Usage.from_openai(out["usage"]),
                     batch=True)

    async def count_tokens(self, req: ChatRequest, dep: Deployment) -> int:
        """The prompt's input tokens as Anthropic counts them (`POST
        /v1/messages/count_tokens`): the request as /v1/messages would send it."""
        body = messages_body(req, dep.model)
        for name in _NOT_COUNTED:
            body.pop(name, None)
        data, _ = await self.transport.post_json(_count_url(dep), orjson.dumps(body),
                                                 _headers(dep), dep)
        n = data.get("input_tokens")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise UpstreamError(f"Upstream {http.where(dep)} answered count_tokens without "
                                "a token count.")
        return n

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        body = _request_body(req, dep)
        stream = await self.transport.open_stream(_url(dep), body, _headers(dep), dep,
                                                  "anthropic")
        translator = StreamTranslator(dep.model, http.where(dep))
        batches = stream.batches()
        try:
            # An error as the first event is still retryable, so it is raised from here.
            first: list[sse.SseEvent] = await anext(batches, [])  # read by open_stream
            pending = [c for ev in first for c in _translate(translator, ev, dep)]
        except BaseException:
            stream.resp.close()
            raise
        out = ReplyStream(frames=sse.no_frames(), model=translator.model,
                          ratelimit=stream.ratelimit, flight=stream.flight)
        if translator.usage.get("input_tokens") is not None:  # from its message_start
            out.input_tokens = usage_to_openai(translator.usage)["prompt_tokens"]
        out.frames = sse.encode_chunks(
            _chunks(stream, batches, pending, translator, out, dep), out)
        return out


def _request_body(req: ChatRequest, dep: Deployment) -> bytes:
    """What /v1/messages gets: the request, with prompt-cache breakpoints where the
    deployment wants them (`anthropic_cache`)."""
    body = messages_body(req, dep.model)
    if dep.prompt_cache:
        add_breakpoints(body)
    return orjson.dumps(body)


def _translate(t: StreamTranslator, ev: sse.SseEvent, dep: Deployment) -> list[Chunk]:
    data = http.parse_event(ev[1], dep)
    if "type" not in data and ev[0]:
        data["type"] = ev[0].decode()
    return t.feed(data)


async def _chunks(stream: http.OpenStream, batches: AsyncIterator[list[sse.SseEvent]],
                  pending: list[Chunk], t: StreamTranslator, out: ReplyStream,
                  dep: Deployment) -> ChunkStream:
    """Translate upstream events into chunks; record usage and the answering model."""
    async with http.stream_errors(stream, dep):
        while True:
            out.model = t.model
            if t.done:  # set before the usage chunk goes out, for consumers that stop there
                out.usage = Usage.from_openai(usage_to_openai(t.usage))
            for chunk in pending:
                yield chunk
            if t.done:
                return
            batch = await anext(batches, None)
            if batch is None:
                raise UpstreamError(f"Upstream {http.where(dep)} closed the stream before "
                                    "message_stop.")
            pending = [c for ev in batch for c in _translate(t, ev, dep)]
