"""What `tollway batch` shows of a batch object: the gateway's dollars beside OpenAI's
fields (the simulator sends none; test_batch_cli.py runs the commands against it)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest
from openai.types import Batch
from tqdm import tqdm

from tollway import batch_cli
from tollway.batch_cli import Progress


def batch(status: str = "in_progress", total: int = 1000, completed: int = 600,
          failed: int = 40, **extra: Any) -> Batch:
    return Batch.model_validate({
        "id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions",
        "input_file_id": "file-1", "completion_window": "24h", "status": status,
        "created_at": 1_790_000_000, "completed_at": 1_790_000_754,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        **extra})


def test_progress_reads_the_gateways_cost() -> None:
    p = Progress.of(batch(tollway={"cost_usd": 0.0123}))
    assert (p.status, p.total, p.done, p.failed, p.cost_usd) == (
        "in_progress", 1000, 640, 40, 0.0123)
    assert p.cost_text() == "$0.0123"
    for other in ({}, {"tollway": None}, {"tollway": {"cost_usd": "lots"}}):
        assert Progress.of(batch(**other)).cost_usd is None
    validating = Progress.of(batch("validating", **{"request_counts": None}))
    assert (validating.total, validating.done) == (0, 0)


def test_the_summary_and_the_list_show_dollars_when_the_server_says() -> None:
    done = batch("completed", completed=960, tollway={"cost_usd": 1.5})
    assert batch_cli.summary(done) == ("batch_1 completed after 12m 34s: 960 succeeded, "
                                       "40 failed of 1000 lines; cost $1.50")
    assert batch_cli.summary(batch("completed", completed=960)).endswith("of 1000 lines")
    lines = batch_cli.batches_table([done, batch()]).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "DONE", "FAILED", "COST", "USD", "CREATED"]
    assert lines[1].split()[:5] == ["batch_1", "completed", "1000/1000", "40", "1.50"]
    assert lines[2].split()[:5] == ["batch_1", "in_progress", "640/1000", "40", "-"]


def test_the_bar_shows_lines_failed_and_dollars() -> None:
    sink = io.StringIO()
    with tqdm(total=None, file=sink, mininterval=0) as bar:
        batch_cli.show(bar, Progress.of(batch(tollway={"cost_usd": 0.25})))
    assert "in_progress" in sink.getvalue() and "640/1000" in sink.getvalue()
    assert "failed 40, $0.25" in sink.getvalue()


def test_errors_file_names_and_arguments() -> None:
    assert batch_cli.errors_path(Path("out/results.jsonl")) == Path(
        "out/results.errors.jsonl")
    assert batch_cli.errors_path(Path("results")) == Path("results.errors.jsonl")
    assert batch_cli.metadata_pair("job=a=b") == ("job", "a=b")
    for bad in ("job", "=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            batch_cli.metadata_pair(bad)
    assert batch_cli.duration(59) == "59s" and batch_cli.duration(3 * 3600 + 300) == "3h 05m"


def test_the_gateway_address_comes_from_the_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TOLLWAY_URL", "TOLLWAY_BASE_URL", "TOLLWAY_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "tollway.yaml"
    cfg.write_text("server: {port: 4321}\n")
    p = argparse.ArgumentParser()
    batch_cli.add_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(["batch", "list", "--config", str(cfg)])
    assert str(batch_cli.connect(args).base_url) == "http://127.0.0.1:4321/v1/"
    monkeypatch.setenv("TOLLWAY_BASE_URL", "http://elsewhere:1")
    assert str(batch_cli.connect(args).base_url) == "http://elsewhere:1/v1/"
