"""Every command and option of `tollway` explains itself in --help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator

from tollway.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: str = "tollway"
         ) -> Iterator[tuple[str, argparse.Action]]:
    """(the command's path, an action) for every action of every parser in the tree."""
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def describe(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or str(action.dest)


def test_every_option_and_subcommand_has_help() -> None:
    missing = []
    commands = 0
    for path, action in walk(build_parser()):
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            missing += [f"{path} {name}" for name in action.choices if not helps.get(name)]
            commands += len(action.choices)
        elif not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            missing.append(f"{path} {describe(action)}")
    assert commands > 20  # the walk reached the nested commands
    assert missing == []


def test_help_of_a_nested_command_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "tollway.cli", "keys", "create", "--help"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin",
                            "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert r.returncode == 0, r.stderr
    assert "--team" in r.stdout and "the team charged" in r.stdout
