import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tollway import config
from tollway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid() -> None:
    raw = yaml.safe_load((ROOT / "tollway.example.yaml").read_text())
    cfg = config.parse(raw, env={"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant"})
    assert cfg.resolve("default") is not None
    _, smart = cfg.resolve("smart")  # type: ignore[misc]
    assert [d.provider for d in smart.deployments] == ["openai", "anthropic"]
    assert smart.deployments[0].api_key == "sk-test"
    assert smart.deployments[0].timeouts.first_token == 30


def test_every_timeout_reaches_the_deployment() -> None:
    cfg = config.parse({"models": {"x": {"deployments": [{
        "provider": "local", "model": "m",
        "timeouts": {"connect": 1, "first_token": 2, "idle": 3, "total": 4}}]}}}, env={})
    d = cfg.models["x"].deployments[0].to_deployment()
    assert (d.connect_timeout, d.first_token_timeout, d.idle_timeout, d.total_timeout) == (
        1, 2, 3, 4)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"server": {"port": "abc"}}, "server.port: Expected `int`, got `str`"),
        ({"server": {"port": 70000}}, "server.port: expected 1-65535"),
        ({"server": {"bogus": 1}}, "server: unknown field `bogus`"),
        ({"models": {"x": {"deployments": [{"provider": "foo", "model": "m"}]}}},
         "models.x.deployments[0].provider: invalid value 'foo'"),
        ({"models": {"x": {"deployments": []}}}, "models.x.deployments: expected at least one"),
        ({"models": {"x": {"deployments": [{"provider": "openai", "model": "m"}]}}},
         "models.x.deployments[0].api_key: required for provider openai"),
        ({"models": {"x": {"deployments": [
            {"provider": "openai", "model": "m", "api_key": "${NOPE}"}]}}},
         "models.x.deployments[0].api_key: environment variable NOPE is not set"),
        ({"models": {"x": {"deployments": [
            {"provider": "local", "model": "m", "api_base": "ftp://x"}]}}},
         "api_base: expected an http(s) URL"),
        ({"models": {"x": {"deployments": [
            {"provider": "local", "model": "m", "timeouts": {"idle": 0}}]}}},
         "models.x.deployments[0].timeouts.idle: must be > 0 seconds"),
        ({"aliases": {"default": "missing"}}, "aliases.default: points to 'missing'"),
        ([1, 2], "(top level): expected a mapping"),
    ],
)
def test_mistakes_name_the_field(raw: object, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(raw, env={})
    assert expected in str(e.value)


def test_env_default_and_substitution() -> None:
    cfg = config.parse({"models": {"x": {"deployments": [
        {"provider": "openai", "model": "m", "api_key": "${K:-fallback}",
         "api_base": "http://${HOST}/v1"}]}}}, env={"HOST": "h:1"})
    d = cfg.models["x"].deployments[0]
    assert (d.api_key, d.api_base) == ("fallback", "http://h:1/v1")


def test_embedded_default_without_keys_is_local_only() -> None:
    cfg = config.embedded_default({})
    assert cfg.public_models() == ["default", "local", "local-embed"]
    assert cfg.resolve("default")[1].deployments[0].provider == "local"  # type: ignore[index]
    embed = cfg.models["local-embed"].deployments[0]
    assert (embed.provider, embed.model) == ("local", config.EMBEDDING_MODEL)


def test_embedded_default_honours_sdk_environment() -> None:
    cfg = config.embedded_default({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://x:9/v1",
                                   "ANTHROPIC_API_KEY": "a"})
    gpt = cfg.models["openai/*"].deployments[0]
    assert (gpt.provider, gpt.model, gpt.api_base, gpt.api_key) == (
        "openai", "*", "http://x:9/v1", "k")
    claude = cfg.models["anthropic/*"].deployments[0]
    assert (claude.provider, claude.model, claude.api_base) == ("anthropic", "*", None)
    assert sorted(cfg.models) == ["anthropic/*", "local", "local-embed", "openai/*"]


def test_cli_reports_config_error_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "tollway.yaml"
    bad.write_text("server:\n  port: nope\n")
    r = subprocess.run([sys.executable, "-m", "tollway.cli", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "configuration error: server.port: Expected `int`, got `str`" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_reports_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "tollway.yaml"
    bad.write_text("server: [unclosed\n")
    r = subprocess.run([sys.executable, "-m", "tollway.cli", "check-config", "--config",
                        str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "not valid YAML" in r.stderr and "Traceback" not in r.stderr


# --- what an error suggests ------------------------------------------------------------

LOCAL = {"deployments": [{"provider": "local", "model": "m"}]}


@pytest.mark.parametrize(("raw", "message"), [
    ({"modles": {}}, "(top level): unknown field `modles` (did you mean `models`?)"),
    ({"server": {"prot": 4000}}, "server: unknown field `prot` (did you mean `port`?)"),
    ({"models": {"ok": LOCAL, "x": {"deployments": [
        {"provider": "local", "model": "m"}, {"provider": "local", "model": "m", "weigth": 2}]}}},
     "models.x.deployments[1]: unknown field `weigth` (did you mean `weight`?)"),
    ({"models": {"x": {"deployments": [{"provider": "opneai", "model": "m"}]}}},
     "models.x.deployments[0].provider: invalid value 'opneai': expected one of anthropic, "
     "local, openai (did you mean 'openai'?)"),
    ({"server": {"unpriced": "never"}},
     "server.unpriced: invalid value 'never': expected one of allow, refuse, "
     "refuse_if_dollar_limit"),
    ({"guards": {"pii": 3}}, "guards.pii: Expected `str`, got `int`: one of block, log, off, "
     "redact"),
    ({"budgets": {"teams": {"a": [{"period": "weekly", "usd": 1}]}}},
     "budgets.teams[...][0].period: invalid value 'weekly': expected one of day, month, total"),
    ({"prices": {1: {"input": 1, "output": 2}}}, "prices: a key: Expected `str`, got `int`"),
    ({"models": {"fast": LOCAL}, "aliases": {"default": "fsat"}},
     "aliases.default: points to 'fsat', which is not a model (did you mean 'fast'?)"),
    ({"models": {"fast": LOCAL, "smart": {**LOCAL, "fallbacks": ["fats"]}}},
     "models.smart.fallbacks[0]: 'fats' is not a configured model (did you mean 'fast'?)"),
])
def test_errors_list_valid_values_and_suggest_the_nearest_name(raw: object,
                                                               message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(raw, env={})
    assert str(e.value) == message


def test_an_unknown_field_with_no_near_name_lists_the_fields() -> None:
    with pytest.raises(ConfigError) as e:
        config.parse({"store": {"zzz": 1}}, env={})
    assert str(e.value).startswith("store: unknown field `zzz`; the fields here are kind, ")


def test_cli_prints_the_suggestion(tmp_path: Path) -> None:
    bad = tmp_path / "tollway.yaml"
    bad.write_text("server:\n  prot: 4100\n")
    r = subprocess.run([sys.executable, "-m", "tollway.cli", "check-config", "--config",
                        str(bad)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, "tollway: configuration error: server: unknown "
                                           "field `prot` (did you mean `port`?)\n")
