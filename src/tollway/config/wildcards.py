"""Wildcard aliases: one entry of `models` that serves a whole family of names.

An alias whose name ends in `*` (`openai/*`, `claude-*`, `*`) serves every name that
starts with what comes before the `*`; in its deployments, a `*` in `model` stands for
what the alias's `*` matched. So `openai/*` with `model: "*"` sends
`openai/gpt-4o-2024-08-06` upstream as `gpt-4o-2024-08-06`, and `claude-*` with
`model: "claude-*"` sends the name unchanged. The longest prefix wins; an alias
configured by its full name always wins over any pattern.

Names without a provider prefix are matched as written first, then as
`PROVIDER/name`, the provider being the price table's (or the family's) for that name
(`gateway/routes.py` does that part: the price table is not this layer's).

Compared with LiteLLM (`model_name: "openai/*"` with `model: "openai/*"`: patterns as
regular expressions, first match wins, order-dependent) and Bifrost (any
`provider/model` goes to the provider's keys, an allow-list per key): one rule, no
regular expressions, no order dependence, and every setting of an ordinary alias
(retry, breaker, pacing, limits, fallbacks, guards, cache) applies to the names it
serves.
"""

from __future__ import annotations

from collections.abc import Iterable

WILDCARD = "*"
# What a `*` may stand for: a model name, not a path or an essay (it reaches the
# upstream's JSON body and the ledger).
MAX_MATCH = 200


# Model families by name, for names the table does not list (a new snapshot, a model
# priced only in tollway.yaml): the provider whose API serves them.
_FAMILIES = (("gpt-", "openai"), ("chatgpt-", "openai"), ("o1", "openai"), ("o3", "openai"),
             ("o4", "openai"), ("text-embedding-", "openai"), ("claude-", "anthropic"))


def family_provider(model: str) -> str | None:
    """The provider a model name's family belongs to, by its name alone, or None."""
    name = model.strip().lower()
    for prefix, provider in _FAMILIES:
        if name.startswith(prefix) and (prefix[-1] == "-" or len(name) == len(prefix)
                                        or name[len(prefix)] == "-"):
            return provider
    return None


def is_pattern(name: str) -> bool:
    return WILDCARD in name


def pattern_problem(alias: str) -> str | None:
    """Why `alias` is not a valid pattern (one `*`, at its end), or None."""
    if alias.count(WILDCARD) != 1 or not alias.endswith(WILDCARD):
        return "a wildcard alias has one '*', at its end (e.g. 'openai/*', 'claude-*')"
    return None


def model_problem(model: str, alias_is_pattern: bool) -> str | None:
    """Why a deployment's `model` is not valid under its alias, or None."""
    if not is_pattern(model):
        return None
    if not alias_is_pattern:
        return ("'*' in a model stands for what a wildcard alias matched; this alias "
                "has no '*'")
    if model.count(WILDCARD) != 1:
        return "at most one '*'"
    return None


def fill(model: str, matched: str) -> str:
    """A deployment's upstream model for a name whose `*` matched `matched`."""
    return model.replace(WILDCARD, matched) if WILDCARD in model else model


def valid_match(matched: str) -> bool:
    return (0 < len(matched) <= MAX_MATCH and matched.isprintable() and " " not in matched
            and WILDCARD not in matched)


class Patterns:
    """The wildcard aliases of a configuration, longest prefix first."""

    def __init__(self, aliases: Iterable[str]) -> None:
        self._by_prefix = sorted(((a[:-1], a) for a in aliases if is_pattern(a)),
                                 key=lambda pa: -len(pa[0]))

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def match(self, name: str) -> tuple[str, str] | None:
        """(the pattern alias, what its `*` matched) for `name`, or None."""
        for prefix, alias in self._by_prefix:
            if name.startswith(prefix):
                matched = name[len(prefix):]
                return (alias, matched) if valid_match(matched) else None
        return None

    def match_with(self, name: str, provider: str | None) -> tuple[str, str, str] | None:
        """As `match`, trying `PROVIDER/name` when `name` itself matches nothing:
        (pattern alias, what it matched, the name it matched as)."""
        found = self.match(name)
        if found is not None:
            return found[0], found[1], name
        if provider is None or "/" in name:
            return None
        qualified = f"{provider}/{name}"
        found = self.match(qualified)
        return (found[0], found[1], qualified) if found is not None else None
