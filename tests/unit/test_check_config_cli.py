"""`tollway check-config`: what a configuration serves, counted right, and a warning
with a non-zero exit for one that serves nothing (the real command, as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tollway import config
from tollway.config import served


def check_config(tmp_path: Path, raw: Any) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "tollway.yaml"
    f.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "tollway.cli", "check-config", "--config",
                           str(f)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin",
                               "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def dep(model: str) -> dict[str, Any]:
    return {"deployments": [{"provider": "openai", "model": model, "api_key": "k"}]}


def test_each_kind_of_name_is_counted_apart(tmp_path: Path) -> None:
    r = check_config(tmp_path, {
        "models": {"fast": dep("gpt-4o-mini"), "smart": dep("gpt-4o"), "openai/*": dep("*")},
        "aliases": {"default": "fast"}, "tiers": {"cheap": {"model": "fast"}}})
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == ("ok: serves 2 models (fast, smart), 1 wildcard model (openai/*), "
                        "1 alias (default), 1 tier (tier:cheap)\n")


def test_a_configuration_that_serves_nothing_is_a_warning_and_exit_1(tmp_path: Path) -> None:
    r = check_config(tmp_path, {"server": {"port": 4100}})
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("tollway: warning: the configuration serves no model")


def test_an_unknown_name_lists_the_first_names_served_and_counts_the_rest() -> None:
    cfg = config.parse({"models": {f"m{i:02d}": dep("gpt-4o") for i in range(30)},
                        "tiers": {"cheap": {"model": "m00"}}}, env={})
    assert served.target(cfg, "tier:cheap") == "m00"
    text = served.unknown(cfg, "gpt-4o", list(cfg.models))
    assert text.startswith("unknown model 'gpt-4o': this configuration "
                           "serves m00, m01, ")
    assert text.endswith(f"m{served.SHOWN_NAMES - 1:02d} and 11 more")  # 30 models + 1 tier
