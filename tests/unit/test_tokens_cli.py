import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tollway import config
from tollway.accounting.estimate import estimate, parse_input
from tollway.accounting.tokens import count_request, count_text
from tollway.types import ChatRequest

CFG = config.parse({"models": {
    "fast": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini", "api_key": "k"}]},
    "old": {"deployments": [{"provider": "openai", "model": "gpt-4", "api_key": "k"}]},
    "mine": {"deployments": [{"provider": "openai", "model": "mystery", "api_key": "k"}]},
}}, env={})

CONVERSATION = {"messages": [{"role": "system", "content": "be brief"},
                             {"role": "user", "content": "What is the capital of France?"}]}


def test_messages_json_is_counted_in_chat_format_per_model() -> None:
    source = parse_input(orjson.dumps(CONVERSATION).decode())
    assert isinstance(source, ChatRequest)
    rows = {r.model: r for r in estimate(source, CFG)}
    assert rows["fast"].tokens == count_request(source, "gpt-4o-mini")
    assert (rows["fast"].encoding, rows["old"].encoding) == ("o200k_base", "cl100k_base")
    assert rows["fast"].input_usd == pytest.approx(rows["fast"].tokens * 0.15 / 1e6)
    assert rows["mine"].input_usd is None


def test_plain_text_and_bare_message_lists() -> None:
    assert parse_input("[not json") == "[not json"
    assert isinstance(parse_input(orjson.dumps(CONVERSATION["messages"]).decode()), ChatRequest)
    rows = estimate("hello world", CFG)
    assert {r.tokens for r in rows if r.model == "fast"} == {count_text("hello world",
                                                                        "gpt-4o-mini")}


def test_cli_reads_a_file(tmp_path: Path) -> None:
    f = tmp_path / "conv.json"
    f.write_bytes(orjson.dumps(CONVERSATION))
    r = subprocess.run([sys.executable, "-m", "tollway.cli", "tokens", str(f)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "k",
                            # these sources, not the installed ones
                            "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("input: 2 messages")
    line = next(x for x in r.stdout.splitlines() if x.startswith("gpt-4o-mini "))
    assert "openai/gpt-4o-mini" in line and "$" in line


def tokens_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "tollway.yaml"
    cfg.write_text(orjson.dumps({
        "models": {"fast": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini",
                                             "api_key": "k"}]},
                   "old": {"deployments": [{"provider": "openai", "model": "gpt-4",
                                            "api_key": "k"}]}},
        "aliases": {"default": "fast"}}).decode())
    return subprocess.run([sys.executable, "-m", "tollway.cli", "tokens", "--config", str(cfg),
                           *args], input="hello world", capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin",
                                           "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def test_cli_model_by_alias_shows_the_model_it_names(tmp_path: Path) -> None:
    r = tokens_cli(tmp_path, "--model", "default")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[0] for ln in r.stdout.splitlines()[2:]] == ["fast"]
    assert "counting: 100%" in r.stderr and "1/1" in r.stderr  # the bar, on stderr only


def test_cli_unknown_model_is_an_error_naming_the_known_ones(tmp_path: Path) -> None:
    r = tokens_cli(tmp_path, "--model", "fats")  # refused before counting anything
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == ("tollway: unknown model 'fats' (did you mean 'fast'?): this "
                        "configuration serves default, fast, old\n")
    r = tokens_cli(tmp_path, "--model", "gpt-4o")
    assert r.returncode == 1 and r.stderr.startswith("tollway: unknown model 'gpt-4o':")
