"""Reading a configuration: YAML, `${VAR}` from the environment, the typed conversion,
and msgspec's errors turned into `ConfigError("<field path>: <problem>")`, with the
valid values or the nearest field name (config/hints.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from tollway.config.defaults import embedded_default
from tollway.config.hints import explain
from tollway.config.root import Config, check
from tollway.config.server import ServerConfig, check_server
from tollway.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(node: Any, path: str, env: dict[str, str]) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string, naming the field on failure."""
    if isinstance(node, dict):
        return {k: _substitute_env(v, f"{path}.{k}" if path else str(k), env)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {var} is not set")
        return _ENV_REF.sub(repl, node)
    return node


def parse(raw: Any, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("(top level): expected a mapping of settings")
    raw = _substitute_env(raw, "", env)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(explain(Config, e, raw)) from None
    cfg.auth.master_key = cfg.auth.master_key or env.get("TOLLWAY_MASTER_KEY") or None
    check(cfg)
    return cfg


def source(path: str | os.PathLike[str] | None, env: dict[str, str] | None = None
           ) -> str | None:
    """The file `load(path)` reads: `path`, else TOLLWAY_CONFIG, else ./tollway.yaml if
    present; None for the embedded default."""
    env = dict(os.environ) if env is None else env
    if path is not None:
        return os.fspath(path)
    return env.get("TOLLWAY_CONFIG") or ("tollway.yaml" if Path("tollway.yaml").exists()
                                         else None)


def _read(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None


def load(path: str | os.PathLike[str] | None, env: dict[str, str] | None = None) -> Config:
    """Load `path`; with None, use ./tollway.yaml if present, else the embedded default."""
    env = dict(os.environ) if env is None else env
    found = source(path, env)
    if found is None:
        return embedded_default(env)
    return parse(_read(found), env)


def load_server(path: str | os.PathLike[str] | None,
                env: dict[str, str] | None = None) -> tuple[ServerConfig, str | None]:
    """The `server` section alone (and the file it came from; None: the defaults), for
    the commands that talk to a gateway: the shell they run in need not hold the
    providers' secrets the rest of the file names."""
    env = dict(os.environ) if env is None else env
    found = source(path, env)
    raw = _read(found) if found is not None else None
    section = raw.get("server") if isinstance(raw, dict) else None
    only = {"server": _substitute_env(section, "server", env)} if section is not None else {}
    try:  # as a whole configuration of that section alone: the errors name it alike
        server = msgspec.convert(only, Config, strict=False).server
    except msgspec.ValidationError as e:
        raise ConfigError(explain(Config, e, only)) from None
    check_server(server)
    return server, found
