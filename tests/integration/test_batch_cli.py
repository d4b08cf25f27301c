"""`tollway batch`, run as a subprocess against the simulator's OpenAI Files and Batch
APIs (the gateway's /v1/batches speaks the same protocol).

One simulator serves the module; each test starts with no batches and the start-up
config. The batch's state is checked with the official SDK; waits poll with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from tests.helpers import sim_fixtures
from tests.helpers.sim import SimHandle, free_port

sim_server, sim = sim_fixtures.sim_server, sim_fixtures.sim

T = TypeVar("T")
# Environment the CLI would otherwise read its gateway and key from.
_OURS = ("TOLLWAY_", "OPENAI_")


@pytest.fixture
def client(sim: SimHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.openai_base, api_key="x", max_retries=0) as c:
        yield c


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    return {**env, **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tollway.cli", "batch", *args]


def cli(sim: SimHandle | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`tollway batch ARGS` against the simulator (None: the URL comes from `env`)."""
    at = ["--base-url", sim.url] if sim else []
    return subprocess.run(command(*args, *at), capture_output=True, text=True, timeout=60,
                          env=environment(**env), check=False)


def until(fetch: Callable[[], T], done: Callable[[T], bool], within: float = 15.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {within}s: {value}")
        time.sleep(0.02)


def chat_line(i: int, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"Q{i}?"}]}}


def write_input(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]


def ids(n: int) -> list[str]:
    return [f"req-{i}" for i in range(n)]


def batch_id(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert re.fullmatch(r"batch_\w+", first), stdout
    return first


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# -- submit --wait ---------------------------------------------------------------------


def test_submit_wait_writes_the_results_in_input_order(
        sim: SimHandle, client: openai.OpenAI, tmp_path: Path) -> None:
    sim.config(batch_delay_s=1)
    source = write_input(tmp_path / "in.jsonl", [chat_line(i) for i in range(1000)])
    out = tmp_path / "results.jsonl"
    stale = tmp_path / "results.errors.jsonl"
    stale.write_text("from an earlier run\n")
    r = cli(sim, "submit", str(source), "--wait", "--out", str(out), "--poll", "0.05",
            "--metadata", "job=nightly", "--metadata", "team=search")
    assert r.returncode == 0, r.stderr
    bid = batch_id(r.stdout)
    assert re.search(rf"^{bid} completed after \d+s: 1000 succeeded, 0 failed of 1000 lines$",
                     r.stdout, re.M), r.stdout
    assert "1000/1000" in r.stderr  # the progress bar's last state
    assert f"wrote 1000 result lines to {out} (no error lines)" in r.stderr
    assert ids_in(out) == ids(1000)
    assert not stale.exists()  # the pair on disk is this batch's
    batch = client.batches.retrieve(bid)
    assert batch.metadata == {"job": "nightly", "team": "search"}
    assert batch.endpoint == "/v1/chat/completions"


def test_failed_lines_go_to_the_errors_file_and_the_summary(
        sim: SimHandle, tmp_path: Path) -> None:
    sim.config(batch_error_rate=0.3)
    source = write_input(tmp_path / "in.jsonl", [
        chat_line(i, "no-such-model" if i == 7 else "gpt-4o-mini") for i in range(100)])
    out = tmp_path / "results.jsonl"
    r = cli(sim, "submit", str(source), "--wait", "--out", str(out), "--poll", "0.05")
    assert r.returncode == 0, r.stderr  # the batch completed; some of its lines failed
    errors_file = tmp_path / "results.errors.jsonl"
    answered, failed = ids_in(out), ids_in(errors_file)
    assert "req-7" in failed and 5 <= len(failed) <= 60  # 30 % of 99 drawn, plus req-7
    assert sorted(answered + failed, key=ids(100).index) == ids(100)
    for got in (answered, failed):
        assert got == sorted(got, key=ids(100).index)  # each in input order
    assert "completed after" in r.stdout
    assert f"{len(answered)} succeeded, {len(failed)} failed of 100 lines" in r.stdout
    assert (f"wrote {len(answered)} result lines to {out}, {len(failed)} error lines to "
            f"{errors_file}") in r.stderr
    assert f"failed {len(failed)}" in r.stderr  # the bar counts them too


def test_an_expired_batch_exits_non_zero_with_what_was_answered(
        sim: SimHandle, tmp_path: Path) -> None:
    # A line every 0.04 s, the window closing at 0.5 s: 12 lines answered, 88 expired.
    sim.config(batch_delay_s=4, batch_expiry_s=0.5)
    source = write_input(tmp_path / "in.jsonl", [chat_line(i) for i in range(100)])
    out = tmp_path / "out.jsonl"
    r = cli(sim, "submit", str(source), "--wait", "--out", str(out), "--poll", "0.05")
    assert r.returncode == 1
    assert "expired after" in r.stdout and "12 succeeded, 88 failed of 100 lines" in r.stdout
    assert ids_in(out) == ids(12)
    assert ids_in(tmp_path / "out.errors.jsonl") == ids(100)[12:]


def test_ctrl_c_stops_waiting_but_not_the_batch(
        sim: SimHandle, client: openai.OpenAI, tmp_path: Path) -> None:
    sim.config(batch_delay_s=30)  # a line every 0.3 s
    source = write_input(tmp_path / "in.jsonl", [chat_line(i) for i in range(100)])
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        # SIGINT as a terminal's Ctrl-C sends it, even if this process was started with
        # it ignored (a background job's children inherit that).
        proc = subprocess.Popen(
            command("submit", str(source), "--wait", "--out", str(tmp_path / "r.jsonl"),
                    "--poll", "0.05", "--base-url", sim.url),
            stdout=stdout, stderr=stderr, env=environment(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            until(err.read_text, lambda text: "in_progress" in text)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
        finally:
            proc.kill()
    bid = batch_id(out.read_text())
    assert (f"stopped waiting; batch {bid} goes on. Resume with: tollway batch status {bid} "
            f"--wait --out {tmp_path / 'r.jsonl'}") in err.read_text()
    assert "Traceback" not in err.read_text()
    assert client.batches.retrieve(bid).status == "in_progress"
    assert not (tmp_path / "r.jsonl").exists()


# -- status, list, cancel, results -----------------------------------------------------


def test_status_list_cancel_and_results(sim: SimHandle, client: openai.OpenAI,
                                        tmp_path: Path) -> None:
    sim.config(batch_delay_s=20)  # a line every 0.2 s
    source = write_input(tmp_path / "in.jsonl", [chat_line(i) for i in range(100)])
    r = cli(sim, "submit", str(source), "--metadata", "job=slow")
    assert r.returncode == 0, r.stderr
    bid = batch_id(r.stdout)
    assert r.stdout == bid + "\n"  # for ID=$(tollway batch submit ...)
    assert f"tollway batch status {bid} --wait" in r.stderr
    until(lambda: client.batches.retrieve(bid),
          lambda b: b.request_counts is not None and b.request_counts.completed >= 2)

    r = cli(sim, "status", bid)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert fields["id"] == bid and fields["status"] == "in_progress"
    assert re.fullmatch(r"\d+/100 done, 0 failed", fields["lines"])
    assert fields["metadata"] == "job=slow" and fields["output"] == "-"

    r = cli(sim, "results", bid)
    assert r.returncode == 1
    assert "is in_progress" in r.stderr and f"tollway batch status {bid} --wait" in r.stderr

    r = cli(sim, "list")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "DONE", "FAILED", "COST", "USD", "CREATED"]
    assert len(rows) == 1
    row = rows[0].split()
    assert row[:2] == [bid, "in_progress"] and row[2].endswith("/100") and row[3:5] == ["0", "-"]

    r = cli(sim, "cancel", bid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{bid} cancelling (")
    r = cli(sim, "status", bid, "--wait", "--poll", "0.05")
    assert r.returncode == 1  # cancelled
    batch = client.batches.retrieve(bid)
    assert batch.status == "cancelled" and batch.request_counts is not None
    done = batch.request_counts.completed
    assert f"{done} succeeded, 0 failed, {100 - done} not run of 100 lines" in r.stdout

    r = cli(sim, "results", bid)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["custom_id"] for line in r.stdout.splitlines()] == ids(done)
    assert r.stderr == ""  # no error lines

    r = cli(sim, "cancel", bid)
    assert r.returncode == 1
    assert r.stderr == "tollway: Cannot cancel a batch with status 'cancelled'.\n"


def test_results_to_the_terminal_and_to_files(sim: SimHandle, client: openai.OpenAI,
                                              tmp_path: Path) -> None:
    sim.config(batch_error_rate=0.3)
    source = write_input(tmp_path / "in.jsonl", [chat_line(i) for i in range(40)])
    bid = batch_id(cli(sim, "submit", str(source), "--wait", "--poll", "0.05").stdout)
    batch = client.batches.retrieve(bid)
    assert batch.output_file_id and batch.error_file_id
    expected_out = client.files.content(batch.output_file_id).text
    expected_errors = client.files.content(batch.error_file_id).text

    r = cli(sim, "results", bid)
    assert r.returncode == 0
    assert (r.stdout, r.stderr) == (expected_out, expected_errors)

    out = tmp_path / "got"
    r = cli(sim, "results", bid, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text() == expected_out
    n = expected_out.count("\n")  # the download's progress bar, at its end
    assert re.search(rf"got: 100%.* {n}/{n} ", r.stderr), r.stderr
    assert (tmp_path / "got.errors.jsonl").read_text() == expected_errors
    assert r.stdout == ""


def test_the_list_is_newest_first_and_limited(sim: SimHandle, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", [chat_line(0)])
    made = [batch_id(cli(sim, "submit", str(source)).stdout) for _ in range(3)]
    r = cli(sim, "list", "--limit", "2")
    assert r.returncode == 0, r.stderr
    assert [row.split()[0] for row in r.stdout.splitlines()[1:]] == made[::-1][:2]


# -- what goes wrong -------------------------------------------------------------------


def test_a_file_not_named_jsonl_is_refused_at_upload(sim: SimHandle, tmp_path: Path) -> None:
    source = write_input(tmp_path / "requests.txt", [chat_line(0)])
    r = cli(sim, "submit", str(source), "--wait")
    assert r.returncode == 1
    assert r.stderr == "tollway: Invalid file format for Batch API. Must be .jsonl\n"
    assert r.stdout == ""
    assert sim.stats()["batches"]["created"] == 0


def test_a_file_of_bad_lines_fails_the_batch_naming_them(sim: SimHandle,
                                                         tmp_path: Path) -> None:
    # The simulator takes any .jsonl at upload and refuses it at validation, as OpenAI
    # does (the batch fails with `errors`); the gateway refuses it at upload with a 400
    # naming the lines, which the CLI prints as the test above shows.
    source = tmp_path / "in.jsonl"
    source.write_text("this is not JSON\n" + json.dumps(chat_line(0)) + "\n"
                      + json.dumps(chat_line(0)) + "\n")
    out = tmp_path / "out.jsonl"
    r = cli(sim, "submit", str(source), "--wait", "--out", str(out), "--poll", "0.05")
    assert r.returncode == 1
    no_traceback(r)
    bid = batch_id(r.stdout)
    assert r.stdout.splitlines()[1:] == [
        f"{bid} failed after 0s: the input file was refused",
        "line 1: This line is not parseable as a valid JSON object.",
        "line 3: The custom_id 'req-0' is not unique within the batch."]
    assert not out.exists()


def test_an_unknown_batch_a_missing_file_and_no_gateway(sim: SimHandle,
                                                        tmp_path: Path) -> None:
    r = cli(sim, "status", "batch_nope")
    assert (r.returncode, r.stderr) == (1, "tollway: No such Batch object: batch_nope\n")
    r = cli(sim, "submit", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 1
    assert r.stderr == f"tollway: {tmp_path / 'missing.jsonl'}: No such file or directory\n"
    r = cli(sim, "submit", str(tmp_path / "x.jsonl"), "--out", "r.jsonl")
    assert r.returncode == 1 and "--out needs --wait" in r.stderr
    port = free_port()
    r = cli(None, "list", "--base-url", f"http://127.0.0.1:{port}")
    assert r.returncode == 1
    assert r.stderr.startswith(f"tollway: cannot reach the gateway at "
                               f"http://127.0.0.1:{port}/v1. Is `tollway serve` running")


def test_the_gateway_and_key_from_the_environment(sim: SimHandle, tmp_path: Path) -> None:
    sim.config(require_key="right")
    r = cli(None, "list", TOLLWAY_BASE_URL=sim.url, TOLLWAY_MASTER_KEY="right")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no batches yet")
    # TOLLWAY_API_KEY comes before the master key; --api-key before both.
    r = cli(None, "list", TOLLWAY_BASE_URL=sim.url + "/v1", TOLLWAY_API_KEY="wrong",
            TOLLWAY_MASTER_KEY="right")
    assert r.returncode == 1
    no_traceback(r)
    assert r.stderr.startswith("tollway: ") and "TOLLWAY_API_KEY" in r.stderr
    r = cli(None, "list", "--api-key", "right", TOLLWAY_URL=sim.url, TOLLWAY_API_KEY="wrong")
    assert r.returncode == 0, r.stderr
