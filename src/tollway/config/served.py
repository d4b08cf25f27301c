"""What a configuration serves, in the words of the commands that say it: each kind of
name counted apart (`check-config`), the model a name reaches, and why a name is not
one of them (`tokens --model`)."""

from __future__ import annotations

from tollway.config.hints import did_you_mean
from tollway.config.root import Config
from tollway.config.wildcards import is_pattern

SHOWN_NAMES = 20  # a wildcard alias may serve hundreds: the first ones say enough


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def summary(cfg: Config) -> str:
    """'2 models (a, b), 1 wildcard model (openai/*), 1 alias (default), 1 tier
    (tier:cheap)': each kind counted apart, every name listed once; '' for none."""
    models = sorted(m for m in cfg.models if not is_pattern(m))
    patterns = sorted(m for m in cfg.models if is_pattern(m))
    aliases = sorted(cfg.aliases)
    tiers = sorted(f"tier:{t}" for t in cfg.tiers)
    return ", ".join(f"{_count(len(names), what)} ({', '.join(names)})"
                     for names, what in ((models, "model"), (patterns, "wildcard model"),
                                         (aliases, "alias"), (tiers, "tier")) if names)


def target(cfg: Config, asked: str) -> str:
    """The model a name is served by: a tier's or an alias's, else the name itself."""
    if asked.startswith("tier:") and (tier := cfg.tiers.get(asked.removeprefix("tier:"))):
        asked = tier.model
    found = cfg.resolve(asked)
    return found[0] if found else asked


def unknown(cfg: Config, asked: str, served: list[str]) -> str:
    """Why `asked` is none of the `served` names: the nearest one, and those there are
    (aliases and tiers included)."""
    names = sorted({*served, *cfg.aliases, *(f"tier:{t}" for t in cfg.tiers)})
    shown = ", ".join(names[:SHOWN_NAMES]) + (f" and {len(names) - SHOWN_NAMES} more"
                                               if len(names) > SHOWN_NAMES else "")
    return (f"unknown model {asked!r}{did_you_mean(asked, names)}: this configuration "
            f"serves {shown or 'no model'}")
