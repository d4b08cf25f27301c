"""`tollway migrate` on a real, empty PostgreSQL database: every migration applied, a
progress bar on stderr while they run, nothing left on a second run."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.postgres import scratch_database, url_of
from tollway.store.postgres import migrations


def migrate(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    return subprocess.run([sys.executable, "-m", "tollway.cli", "migrate", "--postgres-url",
                           url], capture_output=True, text=True, timeout=120, env=env)


def test_migrate_shows_its_progress_and_applies_every_migration() -> None:
    versions = [v for v, _ in migrations()]
    with scratch_database("tollway_migrate_cli") as db:
        first = migrate(url_of(db))
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"applied migrations {versions}\n"
        n = len(versions)
        assert "migrations: 100%" in first.stderr and f"{n}/{n}" in first.stderr
        assert f"{versions[-1]:04d} checked" in first.stderr
        again = migrate(url_of(db))
        assert (again.returncode, again.stdout) == (0, "the schema is up to date\n")
