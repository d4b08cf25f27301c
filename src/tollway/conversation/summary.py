"""The summariser's request, and the message a summary travels in.

The summary goes to the model as a *user* message that says what it is: it is made
of what users wrote, and user input never goes into a system prompt.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from tollway.types import ChatRequest, Message

HEADER: Final = "[Summary of the earlier part of this conversation, written by the gateway]\n"
INSTRUCTIONS: Final = (
    "You keep a running summary of a conversation between a user and an AI assistant, "
    "so the assistant can continue it without the full transcript. Update the summary "
    "with the new turns. Keep every fact, name, number, date, decision, preference, "
    "tool result and open question a later turn may need; drop greetings and filler. "
    "Write plain prose in the third person, at most {words} words. Reply with the "
    "summary only.")


class Stored(msgspec.Struct, frozen=True):
    """A summary as the conversation store keeps it."""

    text: str
    covered: int  # how many history messages (after the pinned ones) it stands for


encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Stored).decode


def message(text: str) -> Message:
    return Message(role="user", content=HEADER + text)


def request(model: str, previous: str | None, turns: list[Message],
            max_tokens: int) -> ChatRequest:
    """Ask `model` for the previous summary extended with `turns`."""
    parts = []
    if previous:
        parts.append(f"Summary so far:\n{previous}")
    parts.append(f"New turns:\n{transcript(turns)}")
    return ChatRequest(model=model, max_tokens=max_tokens, temperature=0.0, messages=[
        Message(role="system", content=INSTRUCTIONS.format(words=max(max_tokens * 3 // 4, 20))),
        Message(role="user", content="\n\n".join(parts))])


def transcript(turns: list[Message]) -> str:
    lines = []
    for m in turns:
        who = {"user": "User", "assistant": "Assistant"}.get(m.role, "Tool")
        text = m.text()
        if text:
            lines.append(f"{who}: {text}")
        for call in m.tool_calls or ():
            lines.append(f"Assistant called {call.function.name}({call.function.arguments})")
        if m.function_call is not None:
            lines.append(f"Assistant called {m.function_call.name}"
                         f"({m.function_call.arguments})")
    return "\n".join(lines)


def text_of(body: dict[str, Any]) -> str | None:
    """The summary in a chat.completion, or None when it has none."""
    try:
        content = body["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return content.strip() if isinstance(content, str) and content.strip() else None
