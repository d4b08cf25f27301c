"""What makes two requests the same request.

The key is a hash of the normalised request after alias resolution: the version, the
tenant scope and namespace, the alias, every sampling parameter and every message
(system prompt included). `stream`, `stream_options` and `user` are not in it: they
change how an answer is delivered, not what it says.

It is built in two parts so the semantic cache can share them: the *partition* is
everything but the latest message (tenant, parameters, system prompt, earlier turns),
and the exact key is the partition plus the latest message. Two requests may be
compared by meaning only inside one partition: a hard boundary, never a similarity
filter.

A latest turn that stands alone (cache/standalone.py) also has *context-free* keys:
those of the same request without its earlier turns (the leading system prompt kept),
i.e. the keys it would have as a conversation's first turn. A first turn's answer is
found under them, and an answer to a stand-alone turn later on is stored under them
too; `cache.across_conversations` turns this on per alias.

An embeddings request's key is its tenant, namespace, alias, inputs and every
parameter but `user` (`encoding_format` included: the stored reply is in its format);
it is only ever looked up exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from tollway.cache.standalone import stands_alone
from tollway.types import ChatRequest, EmbeddingRequest, Message

_encode = msgspec.json.Encoder(order="sorted").encode


@dataclass(slots=True, frozen=True)
class Keys:
    exact: str
    partition: str
    # The latest user turn's text, when the request can be matched by meaning (it ends
    # with a plain-text user message); None otherwise.
    text: str | None


def _message(m: Message) -> Any:
    # A text-only parts list and the same text as a string are one message.
    content: Any = m.content
    if isinstance(content, list) and all(p.get("type") == "text" for p in content):
        content = "".join(p.get("text", "") for p in content)
    out: dict[str, Any] = {"role": m.role, "content": content}
    for name in ("name", "tool_calls", "tool_call_id", "function_call"):
        v = getattr(m, name)
        if v is not None:
            out[name] = v
    return out


_NOT_KEYED = frozenset({"input", "stream", "stream_options"})  # keyed as the chat view


def _parameters(req: ChatRequest) -> dict[str, Any]:
    out = {
        "max_tokens": req.output_limit(), "n": req.n or 1, "temperature": req.temperature,
        "top_p": req.top_p, "stop": req.stop_list() or None, "seed": req.seed,
        "presence_penalty": req.presence_penalty, "frequency_penalty": req.frequency_penalty,
        "tools": req.tools, "tool_choice": req.tool_choice,
        "parallel_tool_calls": req.parallel_tool_calls, "response_format": req.response_format,
        "extra": req.extra or None,
    }
    if req.native is not None:  # what only a native deployment sees (hosted tools, ...)
        out["native"] = {k: v for k, v in req.native.body.items() if k not in _NOT_KEYED}
    return out


def keys_of(req: ChatRequest, alias: str, tenant: str, namespace: str, version: str,
            earlier: Sequence[Message] | None = None) -> Keys:
    """`earlier`: the messages before the latest one to key on (default: all of them)."""
    if earlier is None:
        earlier = req.messages[:-1]
    head = [version, tenant, namespace, alias, _parameters(req), [_message(m) for m in earlier]]
    h = hashlib.blake2b(_encode(head), digest_size=16)
    partition = h.hexdigest()
    last = req.messages[-1] if req.messages else None
    h.update(_encode(_message(last)) if last is not None else b"null")
    text = None
    if last is not None and last.role == "user" and last.name is None:
        content = _message(last)["content"]
        if isinstance(content, str) and content.strip():
            text = content
    return Keys(exact=h.hexdigest(), partition=partition, text=text)


def context_free_keys(req: ChatRequest, alias: str, tenant: str, namespace: str,
                      version: str) -> Keys | None:
    """The keys of the latest turn without the earlier ones, when it stands alone and
    there were earlier turns (on a first turn they are its own keys); else None."""
    messages = req.messages
    lead = 0
    while lead < len(messages) - 1 and messages[lead].role in ("system", "developer"):
        lead += 1
    if lead >= len(messages) - 1:  # a first turn
        return None
    rest = messages[lead:-1]
    # An instruction mid-conversation, or a tool's result, may change any answer.
    if any(m.role in ("system", "developer", "tool", "function") or m.tool_calls
           or m.function_call for m in rest):
        return None
    own = keys_of(req, alias, tenant, namespace, version, messages[:lead])
    if own.text is None:
        return None
    return own if stands_alone(own.text, messages[:-1]) else None


def embedding_keys(req: EmbeddingRequest, alias: str, tenant: str, namespace: str,
                   version: str) -> Keys:
    head = [version, "embeddings", tenant, namespace, alias, req.tokens, req.input,
            req.encoding_format, req.dimensions, req.extra or None]
    exact = hashlib.blake2b(_encode(head), digest_size=16).hexdigest()
    return Keys(exact=exact, partition=exact, text=None)
