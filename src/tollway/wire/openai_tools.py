"""Tools and tool choice of an OpenAI chat request, as OpenAI's API reference defines
them: function tools (`{"type": "function", "function": {"name", "description",
"parameters", "strict"}}`) and custom tools (`{"type": "custom", "custom": {"name",
...}}`); a `tool_choice` of none/auto/required, or naming a tool the request defines;
the legacy `functions` / `function_call` likewise. Returns the tools' JSON schemas,
which `wire/schemas.py` compiles."""

from __future__ import annotations

import re
from typing import Any

from tollway.wire.expect import (
    array,
    bad_value,
    boolean,
    missing,
    obj,
    optional,
    shown,
    string,
)

# OpenAI's rule for function names: letters, digits, underscores and dashes, up to 64.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHOICES = ("none", "auto", "required")

Schemas = list[tuple[str, dict[str, Any]]]


def name(v: Any, param: str) -> str:
    text = string(v, param)
    if not _NAME.fullmatch(text):
        raise bad_value(param, f"{shown(text)} is not a valid name; use letters, digits, "
                        "underscores and dashes, at most 64")
    return text


def _function(fn: dict[str, Any], where: str, schemas: Schemas) -> str:
    fn_name = name(fn.get("name"), f"{where}.name")
    optional(string, fn.get("description"), f"{where}.description")
    params = optional(obj, fn.get("parameters"), f"{where}.parameters")
    if params is not None:
        schemas.append((f"{where}.parameters", params))
    optional(boolean, fn.get("strict"), f"{where}.strict")
    return fn_name


def check_tools(tools: list[dict[str, Any]], schemas: Schemas) -> dict[str, set[str]]:
    """The names the tools define, by type ("function", "custom")."""
    defined: dict[str, set[str]] = {"function": set(), "custom": set()}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        kind = tool.get("type")
        if kind is None:
            raise missing(f"{where}.type")
        if kind == "function":
            fn = obj(tool.get("function"), f"{where}.function")
            defined["function"].add(_function(fn, f"{where}.function", schemas))
        elif kind == "custom":
            custom = obj(tool.get("custom"), f"{where}.custom")
            defined["custom"].add(string(custom.get("name"), f"{where}.custom.name",
                                         nonempty=True))
            optional(string, custom.get("description"), f"{where}.custom.description")
            fmt = optional(obj, custom.get("format"), f"{where}.custom.format")
            if fmt is not None:
                string(fmt.get("type"), f"{where}.custom.format.type", nonempty=True)
        else:
            raise bad_value(f"{where}.type", f"expected 'function' or 'custom', got {shown(kind)}")
    return defined


def _named(choice: dict[str, Any], where: str, defined: dict[str, set[str]]) -> None:
    """A choice naming one tool: `{"type": "function", "function": {"name": ...}}`."""
    kind = choice.get("type")
    if kind is None:
        raise missing(f"{where}.type")
    if not isinstance(kind, str) or kind not in defined:
        raise bad_value(f"{where}.type", f"expected 'function' or 'custom', got {shown(kind)}")
    wanted = string(obj(choice.get(kind), f"{where}.{kind}").get("name"),
                    f"{where}.{kind}.name")
    if wanted not in defined[kind]:
        raise bad_value(f"{where}.{kind}.name", f"no {kind} named {shown(wanted)} in 'tools'")


def check_tool_choice(choice: str | dict[str, Any], defined: dict[str, set[str]]) -> None:
    any_tools = bool(defined["function"] or defined["custom"])
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise bad_value("tool_choice", f"expected one of {', '.join(_CHOICES)} or an "
                            f"object naming a tool, got {shown(choice)}")
        if choice == "required" and not any_tools:
            raise bad_value("tool_choice", "'required' needs 'tools' to choose from")
        return
    if choice.get("type") != "allowed_tools":
        _named(choice, "tool_choice", defined)
        return
    allowed = obj(choice.get("allowed_tools"), "tool_choice.allowed_tools")
    mode = string(allowed.get("mode"), "tool_choice.allowed_tools.mode")
    if mode not in ("auto", "required"):
        raise bad_value("tool_choice.allowed_tools.mode", f"expected 'auto' or 'required', "
                        f"got {shown(mode)}")
    for i, tool in enumerate(array(allowed.get("tools"), "tool_choice.allowed_tools.tools")):
        _named(obj(tool, f"tool_choice.allowed_tools.tools[{i}]"),
               f"tool_choice.allowed_tools.tools[{i}]", defined)


def check_functions(extra: dict[str, Any], schemas: Schemas) -> None:
    """The legacy `functions` and `function_call` (still accepted by OpenAI)."""
    names: set[str] = set()
    functions = extra.get("functions")
    if functions is not None:
        for i, fn in enumerate(array(functions, "functions")):
            names.add(_function(obj(fn, f"functions[{i}]"), f"functions[{i}]", schemas))
    call = extra.get("function_call")
    if call is None or call in ("none", "auto"):
        return
    if isinstance(call, str):
        raise bad_value("function_call", f"expected 'none', 'auto' or an object naming a "
                        f"function, got {shown(call)}")
    wanted = string(obj(call, "function_call").get("name"), "function_call.name")
    if wanted not in names:
        raise bad_value("function_call.name", f"no function named {shown(wanted)} in "
                        "'functions'")
