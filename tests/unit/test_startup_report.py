"""The start-up report `tollway serve` prints: the config read, the store, where each
model goes, the features on, the ledger's echo, and the warning for an open gateway."""

from __future__ import annotations

from typing import Any

from tollway import config
from tollway.server import startup

SIM = {"provider": "openai", "model": "sim-model", "api_base": "http://127.0.0.1:9000/v1",
       "api_key": "secret-sim-key"}


def report(raw: dict[str, Any], host: str = "127.0.0.1", source: str | None = "/etc/t.yaml",
           env: dict[str, str] | None = None) -> list[str]:
    cfg = config.parse(raw, env=env or {})
    return startup.report(cfg, startup.Listening("1.2.3", host, 4000, 1, source))


def line(lines: list[str], label: str) -> str:
    found = [ln for ln in lines if ln.strip().startswith(label)]
    assert len(found) == 1, lines
    return found[0]


def test_open_gateway_warns_and_says_which_file() -> None:
    lines = report({"models": {"sim": {"deployments": [SIM]}}})
    assert lines[0] == ("tollway 1.2.3 serving on http://127.0.0.1:4000/v1  models: sim"
                        "  [OPEN: no key required]")
    assert line(lines, "config") == "  config    /etc/t.yaml"
    warning = line(lines, "WARNING")
    assert "open (no master key is set)" in warning and "anyone on this machine" in warning
    assert "TOLLWAY_MASTER_KEY" in warning
    # Listening beyond loopback: anyone on the network.
    exposed = line(report({"models": {"sim": {"deployments": [SIM]}}}, host="0.0.0.0"),
                   "WARNING")
    assert "ANYONE who can reach 0.0.0.0:4000" in exposed


def test_a_master_key_closes_it_and_is_never_shown() -> None:
    lines = report({"models": {"sim": {"deployments": [SIM]}}},
                   env={"TOLLWAY_MASTER_KEY": "mk-very-secret"})
    assert "OPEN" not in lines[0]
    assert not any("WARNING" in ln for ln in lines)
    text = "\n".join(lines)
    assert "mk-very-secret" not in text and "secret-sim-key" not in text
    # A master key with keys not required is still open, and says why.
    never = report({"models": {"sim": {"deployments": [SIM]}},
                    "auth": {"master_key": "mk", "require_keys": "never"}})
    assert "auth.require_keys is never" in line(never, "WARNING")


def test_defaults_when_no_file() -> None:
    lines = startup.report(config.embedded_default({}),
                           startup.Listening("1.2.3", "127.0.0.1", 4000))
    assert line(lines, "config").startswith("  config    defaults")
    assert line(lines, "store") == "  store     embedded (SQLite under .tollway; one process)"
    assert line(lines, "local ") .split("->")[1].strip() == "local smollm2-135m"
    assert line(lines, "default").split("->")[1].strip() == "local"
    assert line(lines, "features") == "  features  conversations (server-side memory)"
    # Local work: the ledger's rows are not echoed on stderr.
    assert line(lines, "ledger").endswith("stderr echo off (server.access_log)")


def test_several_features_and_where_each_model_goes() -> None:
    lines = report({
        "models": {
            "smart": {"deployments": [SIM, {"provider": "anthropic", "model": "claude-x",
                                            "api_key": "k"}],
                      "fallbacks": ["fast"], "cache": {"semantic": True}},
            "fast": {"deployments": [{**SIM, "model": "small"}],
                     "guards": {"pii": "redact"}},
        },
        "aliases": {"default": "fast"},
        "tiers": {"cheap": {"model": "fast"}},
        "guards": {"injection": "block"},
        "history": {"policy": "window"},
        "budgets": {"global": [{"usd": 10}], "teams": {"a": [{"usd": 1}], "b": [{"usd": 1}]}},
        "rate_limits": {"keys": {"rpm": 60}},
        "store": {"redis_url": "redis://:pw@127.0.0.1:6379/0",
                  "postgres_url": "postgresql://u:pw@db:5432/tollway"},
        "auth": {"master_key": "mk"},
    })
    assert line(lines, "smart") == ("    smart       -> openai sim-model at "
                                     "http://127.0.0.1:9000/v1 | anthropic claude-x; "
                                     "fallbacks fast")
    assert line(lines, "default").split("->")[1].strip() == "fast"
    assert line(lines, "tier:cheap").split("->")[1].strip() == "fast"
    features = line(lines, "features")
    for want in ("cache (semantic: smart)", "guards (injection block, pii redact)",
                 "history (window)", "budgets (global, 2 teams)", "rate limits (keys)",
                 "tiers (cheap)", "conversations"):
        assert want in features, features
    assert "route by turn" in line(lines, "off")
    # The shared store, credentials cut; a fleet's ledger echo is on by default.
    assert line(lines, "store") == ("  store     shared (Redis redis://127.0.0.1:6379/0, "
                                    "PostgreSQL postgresql://db:5432/tollway)")
    assert "pw" not in "\n".join(lines)
    assert line(lines, "ledger").endswith("stderr echo on (server.access_log)")


def test_the_ledger_echo_follows_the_setting() -> None:
    base: dict[str, Any] = {"models": {"sim": {"deployments": [SIM]}}}
    assert config.parse(base, env={}).access_log is False
    assert config.parse({**base, "server": {"access_log": True}}, env={}).access_log is True
    shared = {**base, "store": {"redis_url": "redis://h/0", "postgres_url": "postgresql://h/t"}}
    assert config.parse(shared, env={}).access_log is True
    assert config.parse({**shared, "server": {"access_log": False}},
                        env={}).access_log is False


def test_quiet_keeps_the_essential_line() -> None:
    cfg = config.parse({"models": {"sim": {"deployments": [SIM]}}}, env={})
    at = startup.Listening("1.2.3", "127.0.0.1", 4000, 2, None)
    assert startup.essential(cfg, at) == startup.report(cfg, at)[0]
    assert startup.essential(cfg, at).endswith("(2 workers)  [OPEN: no key required]")
