"""The other parameters of an OpenAI chat request: numbers in the ranges OpenAI's API
reference gives, `response_format`, and the documented parameters Tollway does not
interpret but forwards (kept in `ChatRequest.extra`: `logit_bias`, `logprobs`, ...).

A parameter nobody documents yet is forwarded unchecked: new OpenAI parameters must
work before Tollway learns about them. Enumerations that OpenAI extends often
(`reasoning_effort`, `service_tier`, ...) are checked as strings, not against today's
values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tollway.types import ChatRequest
from tollway.wire.bounds import name_problem
from tollway.wire.expect import (
    array,
    bad_value,
    boolean,
    integer,
    missing,
    number,
    obj,
    optional,
    shown,
    string,
)
from tollway.wire.openai_tools import name

Schemas = list[tuple[str, dict[str, Any]]]
_FORMATS = ("text", "json_object", "json_schema")


def check_scalars(req: ChatRequest) -> None:
    """On every request: what is unset costs one comparison."""
    problem = name_problem(req.model)
    if problem is not None:
        raise bad_value("model", problem)
    if req.user is not None and (problem := name_problem(req.user)) is not None:
        raise bad_value("user", problem)
    if req.max_tokens is not None:  # integers within 64 bits
        integer(req.max_tokens, "max_tokens")
    if req.max_completion_tokens is not None:
        integer(req.max_completion_tokens, "max_completion_tokens")
    if req.seed is not None:
        integer(req.seed, "seed")
    if req.presence_penalty is not None:
        number(req.presence_penalty, "presence_penalty", -2.0, 2.0)
    if req.frequency_penalty is not None:
        number(req.frequency_penalty, "frequency_penalty", -2.0, 2.0)


def check_response_format(fmt: dict[str, Any], schemas: Schemas) -> None:
    kind = fmt.get("type")
    if kind is None:
        raise missing("response_format.type")
    if kind not in _FORMATS:
        raise bad_value("response_format.type", f"expected one of {', '.join(_FORMATS)}, "
                        f"got {shown(kind)}")
    if kind != "json_schema":
        return
    spec = obj(fmt.get("json_schema"), "response_format.json_schema")
    name(spec.get("name"), "response_format.json_schema.name")
    optional(string, spec.get("description"), "response_format.json_schema.description")
    schema = optional(obj, spec.get("schema"), "response_format.json_schema.schema")
    if schema is not None:
        schemas.append(("response_format.json_schema.schema", schema))
    optional(boolean, spec.get("strict"), "response_format.json_schema.strict")


def _logit_bias(v: Any, param: str) -> None:
    for token, bias in obj(v, param).items():
        if not (token.isascii() and token.isdigit()):
            raise bad_value(param, f"keys are token ids (whole numbers), got {shown(token)}")
        number(bias, f"{param}.{token}", -100.0, 100.0)


def _strings(v: Any, param: str) -> None:
    for i, item in enumerate(array(v, param)):
        string(item, f"{param}[{i}]")


def _metadata(v: Any, param: str) -> None:
    for key, value in obj(v, param).items():
        string(value, f"{param}.{key}")


def _top_logprobs(v: Any, param: str) -> None:
    integer(v, param, 0, 20)


_EXTRA: dict[str, Callable[[Any, str], Any]] = {
    "logit_bias": _logit_bias,
    "logprobs": boolean,
    "top_logprobs": _top_logprobs,
    "store": boolean,
    "metadata": _metadata,
    "modalities": _strings,
    "reasoning_effort": string,
    "service_tier": string,
    "verbosity": string,
    "prompt_cache_key": string,
    "prompt_cache_retention": string,
    "safety_identifier": string,
    "audio": obj,
    "prediction": obj,
    "web_search_options": obj,
    "prompt_cache_options": obj,
    "moderation": obj,
}


def check_extra(extra: dict[str, Any]) -> None:
    """The documented parameters among those forwarded as they are."""
    for param, value in extra.items():
        check = _EXTRA.get(param)
        if check is not None and value is not None:
            check(value, param)

