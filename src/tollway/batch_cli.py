"""`tollway batch submit|status|results|cancel|list`: OpenAI's Files and Batch APIs from
a shell, against the gateway's /v1/files and /v1/batches (or anything that speaks them:
`tollway simulate`, api.openai.com).

The client is the official openai SDK, so the CLI speaks the wire format as every app
does. `--base-url` defaults to TOLLWAY_BASE_URL, else what `tollway keys` reads
(TOLLWAY_URL, else server.host/port of the configuration, else http://127.0.0.1:4000);
/v1 is added when missing. The key: `--api-key`, else TOLLWAY_API_KEY, else TOLLWAY_MASTER_KEY.

Waiting polls the batch: a progress bar on stderr (lines done of total, failed, dollars
so far from the gateway's `tollway.cost_usd`), then a summary on stdout; the exit status
is 0 only for a completed batch. Ctrl-C stops the waiting, never the batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tollway.accounting.money import usd, usd_column
from tollway.admin_cli import DEFAULT_URL, gateway_url, table, when

if TYPE_CHECKING:
    from openai import APIStatusError, OpenAI
    from openai.types import Batch
    from tqdm import tqdm

ENDED = ("completed", "failed", "expired", "cancelled")
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


class BatchError(Exception):
    """What went wrong, as printed after 'tollway: '."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a batch is, from its object."""

    status: str
    total: int
    completed: int  # answered
    failed: int  # answered with an error, or expired
    cost_usd: float | None  # the gateway's `tollway.cost_usd`; None from other servers

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @classmethod
    def of(cls, batch: Batch) -> Progress:
        counts = batch.request_counts
        extra = (batch.model_extra or {}).get("tollway")
        cost = extra.get("cost_usd") if isinstance(extra, dict) else None
        return cls(batch.status, counts.total if counts else 0,
                   counts.completed if counts else 0, counts.failed if counts else 0,
                   float(cost) if isinstance(cost, int | float) else None)

    def cost_text(self) -> str:
        return "-" if self.cost_usd is None else "$" + usd(self.cost_usd)


# --- the client ------------------------------------------------------------------------

def connect(args: argparse.Namespace) -> OpenAI:
    import openai

    url = (args.base_url or os.environ.get("TOLLWAY_BASE_URL")
           or gateway_url(None, args.config)[0]).rstrip("/")
    key = (args.api_key or os.environ.get("TOLLWAY_API_KEY")
           or os.environ.get("TOLLWAY_MASTER_KEY"))
    # An open gateway takes any key; the SDK insists on one.
    return openai.OpenAI(base_url=url if url.endswith("/v1") else url + "/v1",
                         api_key=key or "unused", timeout=120)


def server_message(e: APIStatusError) -> str:
    """The OpenAI-shaped error's message (the SDK hands `error` over as the body)."""
    body = e.body
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message) if message else f"HTTP {e.status_code}: {e.message}"
    if e.status_code == 401:
        text += " (the key: --api-key, TOLLWAY_API_KEY or TOLLWAY_MASTER_KEY)"
    return text


Command = Callable[["OpenAI", argparse.Namespace], int]


def run(command: Command) -> Callable[[argparse.Namespace], int]:
    """The command, its failures printed as one line each (never a traceback)."""
    def main(args: argparse.Namespace) -> int:
        import openai

        client = connect(args)
        url = str(client.base_url).rstrip("/")
        try:
            return command(client, args)
        except BatchError as e:
            print(f"tollway: {e}", file=sys.stderr)
        except openai.APIStatusError as e:
            print(f"tollway: {server_message(e)}", file=sys.stderr)
        except openai.APITimeoutError:
            print(f"tollway: the gateway at {url} did not answer in time",
                  file=sys.stderr)
        except openai.APIConnectionError:
            print(f"tollway: cannot reach the gateway at {url}. Is `tollway "
                  "serve` running there? Set --base-url or TOLLWAY_BASE_URL.", file=sys.stderr)
        except OSError as e:  # reading the input, writing the results
            where = f"{e.filename}: " if e.filename else ""
            print(f"tollway: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    return main


# --- what is shown ---------------------------------------------------------------------

def ended_at(batch: Batch) -> int | None:
    return {"completed": batch.completed_at, "failed": batch.failed_at,
            "expired": batch.expired_at, "cancelled": batch.cancelled_at}.get(batch.status)


def duration(seconds: int) -> str:
    """45s, 12m 03s, 3h 05m"""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def refusals(batch: Batch) -> list[str]:
    """Why the batch's input file was refused, a line each."""
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    return [(f"line {e.line}: " if e.line else "") + (e.message or e.code or "invalid")
            for e in errors]


def summary(batch: Batch) -> str:
    p = Progress.of(batch)
    end = ended_at(batch)
    head = f"{batch.id} {batch.status}" + (f" after {duration(end - batch.created_at)}"
                                           if end else "")
    if batch.status == "failed":
        return "\n".join([f"{head}: the input file was refused", *refusals(batch)])
    parts = [f"{p.completed} succeeded", f"{p.failed} failed"]
    parts += [f"{p.total - p.done} not run"] if p.total > p.done else []
    cost = f"; cost {p.cost_text()}" if p.cost_usd is not None else ""
    return f"{head}: {', '.join(parts)} of {p.total} lines{cost}"


def describe(batch: Batch) -> str:
    p = Progress.of(batch)
    rows = [["id", batch.id], ["status", batch.status],
            ["lines", f"{p.done}/{p.total} done, {p.failed} failed"],
            ["cost", p.cost_text()], ["endpoint", batch.endpoint],
            ["created", when(batch.created_at)], ["ended", when(ended_at(batch))],
            ["input", batch.input_file_id], ["output", batch.output_file_id or "-"],
            ["errors", batch.error_file_id or "-"]]
    rows += [["metadata", ", ".join(f"{k}={v}" for k, v in batch.metadata.items())]
             ] if batch.metadata else []
    rows += [["refused", r] for r in refusals(batch)]
    return table(rows[0], rows[1:], right=set())


def batches_table(batches: list[Batch]) -> str:
    if not batches:
        return "no batches yet (tollway batch submit FILE.jsonl)"
    progress = [Progress.of(b) for b in batches]
    costs = iter(usd_column([p.cost_usd for p in progress if p.cost_usd is not None]))
    rows = [[b.id, p.status, f"{p.done}/{p.total}", str(p.failed),
             "-" if p.cost_usd is None else next(costs), when(b.created_at)]
            for b, p in zip(batches, progress, strict=True)]
    return table(["ID", "STATUS", "DONE", "FAILED", "COST USD", "CREATED"], rows,
                 right={2, 3, 4})


# --- waiting ---------------------------------------------------------------------------

def show(bar: tqdm[Any], p: Progress) -> None:
    if p.total and bar.total != p.total:
        bar.total = p.total
    bar.set_description_str(p.status, refresh=False)
    bar.set_postfix_str(f"failed {p.failed}" + (f", {p.cost_text()}" if p.cost_usd is not None
                                                else ""), refresh=False)
    bar.update(p.done - bar.n)


def wait(client: OpenAI, batch: Batch, poll: float) -> Batch:
    """Poll until the batch ends, showing its progress."""
    from tqdm import tqdm

    p = Progress.of(batch)  # no total until validation has counted the lines
    with tqdm(total=p.total or None, desc=p.status, unit="line", file=sys.stderr,
              dynamic_ncols=True) as bar:
        show(bar, p)
        while batch.status not in ENDED:
            time.sleep(poll)
            batch = client.batches.retrieve(batch.id)
            show(bar, Progress.of(batch))
        bar.leave = batch.status != "failed"  # refused whole: no line ran, nothing to show
    return batch


def resume_hint(batch_id: str, out: Path | None) -> str:
    again = f"tollway batch status {batch_id} --wait" + (f" --out {out}" if out else "")
    return (f"stopped waiting; batch {batch_id} goes on. Resume with: {again} "
            f"(stop it: tollway batch cancel {batch_id})")


def follow(client: OpenAI, batch: Batch, args: argparse.Namespace) -> int:
    """Wait for the batch's end, say how it went, write its results (with --out)."""
    try:
        if batch.status not in ENDED:
            batch = wait(client, batch, args.poll)
    except KeyboardInterrupt:
        print(resume_hint(batch.id, args.out), file=sys.stderr)
        return INTERRUPTED
    print(summary(batch), flush=True)
    if args.out and batch.status != "failed":
        print(save_results(client, batch, args.out), file=sys.stderr)
    return 0 if batch.status == "completed" else 1


# --- results ---------------------------------------------------------------------------

def errors_path(out: Path) -> Path:
    """results.jsonl -> results.errors.jsonl"""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(stem + ".errors.jsonl")


def copy_file(client: OpenAI, file_id: str, sink: IO[bytes],
              progress: Callable[[int], object] | None = None) -> int:
    """Stream a file's content into `sink`; returns its lines (`progress` is told those
    of each chunk)."""
    lines = 0
    with client.files.with_streaming_response.content(file_id) as r:
        for chunk in r.iter_bytes():
            sink.write(chunk)
            lines += (n := chunk.count(b"\n"))
            if progress is not None:
                progress(n)
    return lines


def save(client: OpenAI, file_id: str | None, path: Path, expected: int) -> int:
    """The file at `path` whole or not at all (no file id: empty), a progress bar of its
    `expected` lines on stderr while it downloads (a large batch's take a while)."""
    from tqdm import tqdm

    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as f:
            lines = 0
            if file_id:
                with tqdm(total=expected or None, desc=path.name, unit="line",
                          file=sys.stderr, dynamic_ncols=True) as bar:
                    lines = copy_file(client, file_id, f, bar.update)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)
    return lines


def save_results(client: OpenAI, batch: Batch, out: Path) -> str:
    """The output lines at `out`, the error lines beside it (a stale errors file from an
    earlier run is removed, so the pair always describes this batch)."""
    p = Progress.of(batch)
    written = (f"wrote {save(client, batch.output_file_id, out, p.completed)} result lines "
               f"to {out}")
    errors = errors_path(out)
    if batch.error_file_id:
        return written + (f", {save(client, batch.error_file_id, errors, p.failed)} error "
                          f"lines to {errors}")
    errors.unlink(missing_ok=True)
    return written + " (no error lines)"


def finished(client: OpenAI, batch_id: str) -> Batch:
    """The batch, once it has ended with results to fetch."""
    batch = client.batches.retrieve(batch_id)
    if batch.status == "failed":
        raise BatchError(summary(batch))
    if batch.status not in ENDED:
        p = Progress.of(batch)
        raise BatchError(f"batch {batch_id} is {p.status} ({p.done}/{p.total} lines done): "
                         f"its results come when it ends (tollway batch status {batch_id} "
                         "--wait)")
    return batch


# --- commands --------------------------------------------------------------------------

def needs_wait(args: argparse.Namespace) -> None:
    if args.out and not args.wait:
        raise BatchError("--out needs --wait (or, once the batch has ended: "
                         "tollway batch results ID --out FILE)")


def submit(client: OpenAI, args: argparse.Namespace) -> int:
    from openai import omit

    needs_wait(args)
    with args.file.open("rb") as f:
        uploaded = client.files.create(file=(args.file.name, f), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=args.endpoint,
                                  completion_window="24h",
                                  metadata=dict(args.metadata) if args.metadata else omit)
    print(batch.id, flush=True)
    if not args.wait:
        print(f"follow it: tollway batch status {batch.id} --wait", file=sys.stderr)
        return 0
    return follow(client, batch, args)


def status(client: OpenAI, args: argparse.Namespace) -> int:
    needs_wait(args)
    batch = client.batches.retrieve(args.id)
    if args.wait:
        return follow(client, batch, args)
    print(describe(batch))
    return 0


def results(client: OpenAI, args: argparse.Namespace) -> int:
    batch = finished(client, args.id)
    if args.out:
        print(save_results(client, batch, args.out), file=sys.stderr)
        return 0
    sys.stdout.flush()
    for file_id, sink in ((batch.output_file_id, sys.stdout.buffer),
                          (batch.error_file_id, sys.stderr.buffer)):
        if file_id:
            copy_file(client, file_id, sink)
            sink.flush()
    return 0


def cancel(client: OpenAI, args: argparse.Namespace) -> int:
    p = Progress.of(client.batches.cancel(args.id))
    print(f"{args.id} {p.status} ({p.done}/{p.total} lines done; the rest will not run). "
          f"Follow it to its end: tollway batch status {args.id} --wait")
    return 0


def list_batches(client: OpenAI, args: argparse.Namespace) -> int:
    # The SDK's page iterator fetches further pages as it goes.
    page = client.batches.list(limit=min(args.limit, 100))
    print(batches_table(list(islice(page, args.limit))))
    return 0


# --- the command line ------------------------------------------------------------------

def metadata_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
        return value
    return parse


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `batch` on the top-level `tollway` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-url", "--url", dest="base_url", help="the gateway "
                        "(default: TOLLWAY_BASE_URL, else TOLLWAY_URL, else server.host and "
                        f"server.port of the configuration, else {DEFAULT_URL})")
    common.add_argument("--config", help="the gateway's configuration, for its address "
                        "(default: TOLLWAY_CONFIG, else ./tollway.yaml)")
    common.add_argument("--api-key", help="default: TOLLWAY_API_KEY, else TOLLWAY_MASTER_KEY "
                        "(prefer them: an argument shows in ps and shell history)")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true",
                         help="follow its progress until it ends; exit 0 only if completed")
    waiting.add_argument("--out", type=Path, metavar="RESULTS.jsonl",
                         help="with --wait: write the result lines here, the error lines "
                         "beside it (RESULTS.errors.jsonl)")
    waiting.add_argument("--poll", type=positive(float), default=2.0, metavar="SECONDS",
                         help="how often to ask while waiting (default: %(default)s)")

    batch = sub.add_parser("batch", help="submit, follow and fetch batches (OpenAI's Batch "
                           "API: /v1/files, /v1/batches)")
    bs = batch.add_subparsers(dest="batch_command", required=True)

    s = bs.add_parser("submit", parents=[common, waiting],
                      help="upload a JSONL file of requests and start a batch on it")
    s.add_argument("file", type=Path, metavar="FILE.jsonl",
                   help='one request a line: {"custom_id", "method": "POST", "url", "body"}')
    s.add_argument("--endpoint", default="/v1/chat/completions",
                   help="what every line calls (default: %(default)s; also /v1/embeddings, "
                   "/v1/responses)")
    s.add_argument("--metadata", type=metadata_pair, action="append", metavar="KEY=VALUE",
                   help="a label kept with the batch (repeatable, up to 16)")
    s.set_defaults(func=run(submit))

    by_id: dict[str, argparse.ArgumentParser] = {}
    for name, fn, parents, what in (
            ("status", status, [common, waiting], "where a batch is"),
            ("results", results, [common], "an ended batch's result lines (stdout; error "
             "lines on stderr)"),
            ("cancel", cancel, [common], "stop a batch: lines not yet run will not be; "
             "those answered stay in its results")):
        one = by_id[name] = bs.add_parser(name, parents=parents, help=what)
        one.add_argument("id", help="the batch's id (batch_…)")
        one.set_defaults(func=run(fn))
    by_id["results"].add_argument(
        "--out", type=Path, metavar="FILE",
        help="write them here instead, the error lines to FILE.errors.jsonl")

    ls = bs.add_parser("list", parents=[common], help="the most recent batches")
    ls.add_argument("--limit", type=positive(int), default=20, help="default: %(default)s")
    ls.set_defaults(func=run(list_batches))
