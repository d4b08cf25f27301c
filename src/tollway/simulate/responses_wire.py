"""OpenAI's Responses API (`POST /v1/responses`), as api.openai.com speaks it —
statelessly: every request carries its whole conversation (`previous_response_id` is a
400, as `store` means nothing here).

The output: a `reasoning` item first when the request has `reasoning` (its
`encrypted_content` when `include` asks for it), a `web_search_call` when a web_search
tool is offered, then the message (or the function call). A stream is OpenAI's event
sequence, every event numbered. Errors, rate-limit headers and faults are the chat
endpoint's.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.accounting.tokens import count_request
from tollway.simulate.openai_wire import OpenAIDialect
from tollway.simulate.plan import ChoicePlan, SimRequest, ToolSpec
from tollway.simulate.prefix import chat_segments
from tollway.simulate.wire import BadRequest, ReplyContext, Step, build_steps, piece_tokens
from tollway.types import ChatRequest, FunctionCall, Message, ToolCall

_SEARCH_TOOLS = ("web_search", "web_search_preview")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _messages(body: dict[str, Any]) -> list[Message]:
    """The conversation as chat messages, for counting its tokens."""
    out: list[Message] = []
    if isinstance(body.get("instructions"), str):
        out.append(Message(role="system", content=body["instructions"]))
    raw = body["input"]
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise BadRequest("Invalid type for 'input': expected a string or an array.", "input")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"Invalid type for 'input[{i}]': expected an object.",
                             f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"Invalid value for 'input[{i}].role'.", f"input[{i}].role")
            out.append(Message(role=role, content=_text_of(item.get("content"))))
        elif kind == "function_call":
            out.append(Message(role="assistant", tool_calls=[ToolCall(
                id=str(item.get("call_id")), function=FunctionCall(
                    name=str(item.get("name")), arguments=str(item.get("arguments"))))]))
        elif kind == "function_call_output":
            out.append(Message(role="tool", tool_call_id=str(item.get("call_id")),
                               content=_text_of(item.get("output"))))
    return out


def _tool(body: dict[str, Any], messages: list[Message]) -> ToolSpec | None:
    tools = [t for t in body.get("tools") or () if t.get("type") == "function"]
    if not tools or body.get("tool_choice") == "none" or messages[-1].role == "tool":
        return None
    return ToolSpec(str(tools[0].get("name")), tools[0].get("parameters"))


class ResponsesDialect(OpenAIDialect):
    endpoint = "/v1/responses"
    id_prefix = "resp_"

    def parse(self, body: Any) -> SimRequest:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        for field in ("model", "input"):
            if field not in body:
                raise BadRequest(f"Missing required parameter: '{field}'.", field)
        if body.get("previous_response_id") is not None:
            raise BadRequest("This simulator keeps no responses: previous_response_id "
                             "is not supported.", "previous_response_id")
        messages = _messages(body)
        if not messages:
            raise BadRequest("Invalid 'input': empty.", "input")
        model = str(body["model"])
        limit = body.get("max_output_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise BadRequest("Invalid 'max_output_tokens': integer below minimum value.",
                             "max_output_tokens")
        fmt = ((body.get("text") or {}).get("format") or {})
        tools = [t.get("type") for t in body.get("tools") or ()]
        features = set()
        if body.get("reasoning") is not None:
            features.add("reasoning")
            if "reasoning.encrypted_content" in (body.get("include") or ()):
                features.add("encrypted")
        if any(t in _SEARCH_TOOLS for t in tools):
            features.add("web_search")
        prompt_key = next((m.text() for m in reversed(messages) if m.role == "user"), "")
        prompt_tokens = count_request(ChatRequest(model=model, messages=messages), model)
        head = orjson.dumps(body.get("tools"))
        return SimRequest(
            model=model, prompt_key=prompt_key, prompt_tokens=prompt_tokens,
            segments=chat_segments(messages, model, prompt_tokens, head),
            stream=bool(body.get("stream")), limit=limit, tool=_tool(body, messages),
            json_mode=fmt.get("type") in ("json_object", "json_schema"),
            json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
            features=frozenset(features), echo=body)

    def reply_body(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan]) -> bytes:
        r = _Response(ctx, req, plans[0])
        return orjson.dumps(r.whole("completed", r.items("completed")))

    def stream_steps(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan],
                     ttft: float, per_token: float) -> list[Step]:
        r = _Response(ctx, req, plans[0])
        return r.steps(ttft, per_token)


class _Response:
    """One response: its items, whole or as events."""

    def __init__(self, ctx: ReplyContext, req: SimRequest, plan: ChoicePlan) -> None:
        self.ctx, self.req, self.plan = ctx, req, plan
        self.seq = 0
        self.suffix = ctx.id.removeprefix("resp_")

    def status(self) -> str:
        return "incomplete" if self.plan.finish == "length" else "completed"

    def hosted(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if "reasoning" in self.req.features:
            item: dict[str, Any] = {"id": "rs_" + self.suffix, "type": "reasoning",
                                    "summary": []}
            if "encrypted" in self.req.features:
                item["encrypted_content"] = "gAAAA-simulated-" + self.suffix
            out.append(item)
        if "web_search" in self.req.features:
            out.append({"id": "ws_" + self.suffix, "type": "web_search_call",
                        "status": "completed",
                        "action": {"type": "search", "query": self.req.prompt_key[:100]}})
        return out

    def answer(self, status: str, text: str) -> dict[str, Any]:
        call = self.plan.tool_call
        if call is not None:
            return {"id": "fc_" + self.suffix, "type": "function_call", "status": status,
                    "arguments": text, "call_id": "call_" + call.id_suffix,
                    "name": call.name}
        content = [] if status == "in_progress" else [_part(text)]
        return {"id": "msg_" + self.suffix, "type": "message", "status": status,
                "content": content, "role": "assistant"}

    def items(self, status: str) -> list[dict[str, Any]]:
        return [*self.hosted(), self.answer(status, self.plan.text)]

    def whole(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        body = self.req.echo
        done = status not in ("in_progress",)
        final = self.status() if done else status
        tokens = self.plan.tokens
        return {
            "id": self.ctx.id, "object": "response", "created_at": self.ctx.created,
            "status": final, "background": False, "error": None,
            "incomplete_details": ({"reason": "max_output_tokens"}
                                   if done and final == "incomplete" else None),
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "model": self.ctx.model,
            "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None, "reasoning": body.get("reasoning") or {
                "effort": None, "summary": None},
            "store": False, "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
            "user": body.get("user"), "metadata": body.get("metadata") or {},
            "usage": None if not done else {
                "input_tokens": self.req.prompt_tokens,
                "input_tokens_details": {"cached_tokens": self.req.cached_tokens},
                "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.req.prompt_tokens + tokens},
        }

    def event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def steps(self, ttft: float, per_token: float) -> list[Step]:
        opening = [self.event("response.created", response=self.whole("in_progress", [])),
                   self.event("response.in_progress", response=self.whole("in_progress", []))]
        hosted = self.hosted()
        for i, item in enumerate(hosted):
            added = {**item, "status": "in_progress"} if "status" in item else item
            opening.append(self.event("response.output_item.added", output_index=i,
                                      item=added))
            if item["type"] == "web_search_call":
                for phase in ("in_progress", "searching", "completed"):
                    opening.append(self.event(f"response.web_search_call.{phase}",
                                              output_index=i, item_id=item["id"]))
            opening.append(self.event("response.output_item.done", output_index=i, item=item))
        at = len(hosted)
        item = self.answer("in_progress", "")
        opening.append(self.event("response.output_item.added", output_index=at, item=item))
        call = self.plan.tool_call is not None
        if not call:
            opening.append(self.event("response.content_part.added", item_id=item["id"],
                                      output_index=at, content_index=0, part=_part("")))
        rows: list[tuple[bytes, int]] = []
        for i, piece in enumerate(self.plan.pieces):
            if call:
                data = self.event("response.function_call_arguments.delta",
                                  item_id=item["id"], output_index=at, delta=piece)
            else:
                data = self.event("response.output_text.delta", item_id=item["id"],
                                  output_index=at, content_index=0, delta=piece, logprobs=[])
            rows.append((data, piece_tokens(self.plan, i)))
        status = self.status()
        text = self.plan.text
        done = self.answer(status, text)
        if call:
            closing = self.event("response.function_call_arguments.done", item_id=item["id"],
                                 output_index=at, arguments=text, name=done["name"])
        else:
            closing = (self.event("response.output_text.done", item_id=item["id"],
                                  output_index=at, content_index=0, text=text, logprobs=[])
                       + self.event("response.content_part.done", item_id=item["id"],
                                    output_index=at, content_index=0, part=_part(text)))
        closing += self.event("response.output_item.done", output_index=at, item=done)
        closing += self.event(f"response.{status}",
                              response=self.whole(status, [*hosted, done]))
        opening_tokens = self.plan.tool_call.name_tokens if self.plan.tool_call else 0
        return build_steps(b"".join(opening), opening_tokens, rows, closing, ttft, per_token)


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
