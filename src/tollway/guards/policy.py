"""Which guards apply to a request, and what they did to it.

The policy is the `guards` section, overridden by the alias's `guards` and then by the
key's. The gateway checks its input limits (`validate.py`) on what the caller sent;
`inspect` then runs the input guards on what goes upstream — prompt injection (on what
callers and tools wrote: user and tool messages; system prompts are the operator's),
PII (every message) — and returns a `GuardRecord`: the decisions, for the ledger and
the metrics (which guard, what action, which kinds: never the text), and the
placeholders to restore in the reply.

A conversation resends its history on every turn, so each message's findings are
remembered by its text (bounded): only the new turn is scanned. The texts not seen
before are scanned together (`pii.find_all`), so a new request pays each scan once, not
once per message.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from tollway.config import Config, GuardModes, GuardsConfig
from tollway.errors import TollwayError
from tollway.guards import injection, pii
from tollway.guards.validate import InputLimits
from tollway.keys import KeyRecord
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


class Policies:
    """Each alias's policy, resolved once; a key with its own guards resolves per
    request."""

    def __init__(self, config: Config) -> None:
        self.config = config.guards
        self._aliases = {alias: mc.guards for alias, mc in config.models.items()}
        self._policies = {alias: resolve(config.guards, mc.guards)
                          for alias, mc in config.models.items()}

    def of(self, alias: str, key: KeyRecord | None) -> GuardPolicy:
        if key is None or key.guards is None:
            return self._policies[alias]
        return resolve(self.config, self._aliases[alias], key.guards)


@dataclass(slots=True)
class GuardRecord:
    actions: list[str] = field(default_factory=list)  # e.g. "pii:redact:email+phone"
    placeholders: pii.Placeholders | None = None  # to restore in the reply
    policy: GuardPolicy | None = None  # what applied (the output checks need it)

    def summary(self) -> str | None:
        return ",".join(self.actions) if self.actions else None

    @property
    def redacted(self) -> bool:
        return any(a.startswith("pii:redact:") for a in self.actions)


class _Memo:
    """A bounded LRU of a pure function of a message's text, given a function that
    computes it for a list of texts at once."""

    def __init__(self, fn: Callable[[list[str]], list[Any]]) -> None:
        self._fn = fn
        self._seen: OrderedDict[str, Any] = OrderedDict()

    def __call__(self, texts: list[str]) -> list[Any]:
        """The function's value for each of `texts`, computing the unseen ones at once."""
        seen = self._seen
        new = list(dict.fromkeys(t for t in texts if t not in seen))
        made = dict(zip(new, self._fn(new), strict=True)) if new else {}
        out = []
        for t in texts:
            if t in made:
                out.append(made[t])
            else:
                seen.move_to_end(t)
                out.append(seen[t])
        for t, value in made.items():
            if len(t) <= MEMO_MAX_CHARS:
                seen[t] = value
        while len(seen) > MEMO_ENTRIES:
            seen.popitem(last=False)
        return out


_find = _Memo(lambda texts: [tuple(f) for f in pii.find_all(texts)])
_screen = _Memo(lambda texts: [injection.screen(t) for t in texts])
_CLEAR: Final = injection.Screen(0.0, ())


def inspect(req: ChatRequest, policy: GuardPolicy) -> GuardRecord:
    """Run the input guards on the request as it goes upstream (a stored conversation's
    history included; the limits were checked on what the caller sent: `validate.check`);
    raise `GuardBlocked`, or redact `req` in place and say what was done."""
    record = GuardRecord(policy=policy)
    if policy.injection != "off":
        screens = _screen([t for m in req.messages if m.role in ("user", "tool", "function")
                           for t in _texts(m.content)])
        worst = max(screens, key=lambda s: s.score, default=_CLEAR)  # the first of the worst
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
        # In the order `_texts` lists them, which the loop below follows.
        found_each = iter(_find([t for m in req.messages for t in _texts(m.content)]))
        for m in req.messages:
            if isinstance(m.content, str):
                found = next(found_each)
                if found:
                    kinds.update(f.kind for f in found)
                    if policy.pii == "redact":
                        m.content = pii.redact(m.content, list(found), placeholders).text
            elif m.content:
                for part in m.content:
                    value = part.get("text") if part.get("type") == "text" else None
                    if isinstance(value, str) and (found := next(found_each)):
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
