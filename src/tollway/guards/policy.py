"""Which guards apply to a request, and what they did to it.

The policy is the `guards` section, overridden by the alias's `guards` and then by the
key's. `inspect` runs the input guards in order — limits, prompt injection (on what
callers and tools wrote: user and tool messages; system prompts are the operator's),
PII (every message) — and returns a `GuardRecord`: the decisions, for the ledger and
the metrics (which guard, what action, which kinds: never the text), and the
placeholders to restore in the reply.

A conversation resends its history on every turn, so each message's findings are
remembered by its text (bounded): only the new turn is scanned.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from tollway.config import GuardModes, GuardsConfig
from tollway.errors import TollwayError
from tollway.guards import injection, pii
from tollway.guards.validate import InputLimits
from tollway.guards.validate import check as check_limits
from tollway.types import ChatRequest

MEMO_ENTRIES: Final = 4096
MEMO_MAX_CHARS: Final = 32_768  # longer texts are scanned every time (bounded memory)


class GuardBlocked(TollwayError):
    status = 400
    type = "invalid_request_error"
    code = "guard_blocked"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    limits: InputLimits
    pii: str
    pii_output: str
    restore_pii: bool
    injection: str
    injection_threshold: float
    schema_retries: int


def resolve(cfg: GuardsConfig, *overrides: GuardModes | None) -> GuardPolicy:
    """The global guards, then each override in turn (alias, then key)."""
    pii_mode, out, restore = cfg.pii, cfg.pii_output, cfg.restore_pii
    inj, threshold = cfg.injection, cfg.injection_threshold
    for o in overrides:
        if o is None:
            continue
        pii_mode = o.pii or pii_mode
        out = o.pii_output or out
        restore = o.restore_pii if o.restore_pii is not None else restore
        inj = o.injection or inj
        threshold = o.injection_threshold or threshold
    i = cfg.input
    limits = InputLimits(
        max_messages=i.max_messages, max_chars_per_message=i.max_chars_per_message,
        max_chars_total=i.max_chars_total,
        **({"allowed_roles": frozenset(i.allowed_roles)}
           if i.allowed_roles is not None else {}),
        **({"allowed_content_types": frozenset(i.allowed_content_types)}
           if i.allowed_content_types is not None else {}))
    return GuardPolicy(limits, pii_mode, out, restore, inj, threshold, cfg.schema_retries)


@dataclass(slots=True)
class GuardRecord:
    actions: list[str] = field(default_factory=list)  # e.g. "pii:redact:email+phone"
    placeholders: pii.Placeholders | None = None  # to restore in the reply
    policy: GuardPolicy | None = None  # what applied (the output checks need it)

    def summary(self) -> str | None:
        return ",".join(self.actions) if self.actions else None


class _Memo:
    """A bounded LRU of a pure function of a message's text."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn
        self._seen: OrderedDict[str, Any] = OrderedDict()

    def __call__(self, text: str) -> Any:
        if len(text) > MEMO_MAX_CHARS:
            return self._fn(text)
        found = self._seen.get(text)
        if found is None:
            found = self._seen[text] = self._fn(text)
            if len(self._seen) > MEMO_ENTRIES:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(text)
        return found


_find = _Memo(lambda t: tuple(pii.find(t)))
_screen = _Memo(injection.screen)


def inspect(req: ChatRequest, policy: GuardPolicy) -> GuardRecord:
    """Run the input guards; raise `InvalidRequest` / `GuardBlocked`, or redact `req` in
    place and say what was done."""
    check_limits(req, policy.limits)
    record = GuardRecord(policy=policy)
    if policy.injection != "off":
        worst = injection.Screen(0.0, ())
        for m in req.messages:
            if m.role in ("user", "tool", "function"):
                for text in _texts(m.content):
                    s = _screen(text)
                    if s.score > worst.score:
                        worst = s
        if worst.score >= policy.injection_threshold:
            reasons = "+".join(worst.reasons)
            if policy.injection == "block":
                raise GuardBlocked(
                    f"The request was blocked as a likely prompt injection (score "
                    f"{worst.score:.2f} >= {policy.injection_threshold}: {reasons}).")
            record.actions.append(f"injection:log:{reasons}")
    if policy.pii != "off":
        kinds: set[str] = set()
        placeholders = pii.Placeholders()
        for m in req.messages:
            if isinstance(m.content, str):
                found = _find(m.content)
                if found:
                    kinds.update(f.kind for f in found)
                    if policy.pii == "redact":
                        m.content = pii.redact(m.content, list(found), placeholders).text
            elif m.content:
                for part in m.content:
                    value = part.get("text") if part.get("type") == "text" else None
                    if isinstance(value, str) and (found := _find(value)):
                        kinds.update(f.kind for f in found)
                        if policy.pii == "redact":
                            part["text"] = pii.redact(value, list(found), placeholders).text
        if kinds:
            named = "+".join(sorted(kinds))
            if policy.pii == "block":
                raise GuardBlocked(f"The request contains personal data or secrets "
                                   f"({named.replace('+', ', ')}); this gateway does not "
                                   "send them to the model. Remove them and retry.")
            record.actions.append(f"pii:{policy.pii}:{named}")
            if policy.pii == "redact" and policy.restore_pii:
                record.placeholders = placeholders
    return record


def check_output(text: str, policy: GuardPolicy, record: GuardRecord, *, stream: bool
                 ) -> str | None:
    """The output PII guard on a complete reply's text: the text to send instead (when
    redacting), or None to send it as it is. Streams are only logged."""
    if policy.pii_output == "off" or not text:
        return None
    found = pii.find(text)
    if not found:
        return None
    named = "+".join(sorted({f.kind for f in found}))
    mode = "log" if stream else policy.pii_output
    record.actions.append(f"pii_output:{mode}:{named}")
    if mode == "block":
        raise GuardBlocked(f"The model's answer contained personal data or secrets "
                           f"({named.replace('+', ', ')}) and was withheld.", status=502)
    if mode == "redact":
        return pii.redact(text, found).text
    return None


def _texts(content: str | list[dict[str, Any]] | None) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not content:
        return []
    return [p["text"] for p in content if p.get("type") == "text" and isinstance(
        p.get("text"), str)]
