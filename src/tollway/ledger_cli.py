"""`tollway ledger export`: every ledger row of a window, page after page from the
admin API (/admin/ledger), as JSON lines or CSV. A month of rows can take minutes, so
a progress bar runs on stderr, its total the window's request count (/admin/spend)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from tollway.accounting.money import usd
from tollway.accounting.rows import LedgerRow
from tollway.admin_cli import AdminError, Client, add_window, common_options, run, window

MAX_PAGE = 10_000  # the admin API's largest page
COLUMNS = LedgerRow.__struct_fields__
DOLLARS = frozenset({"cost_usd", "saved_usd"})


def pages(c: Client, query: dict[str, str], size: int) -> Iterator[list[dict[str, Any]]]:
    """The window's rows in time order, a page at a time."""
    after: str | None = None
    while True:
        q = {**query, "limit": str(size), **({"after": after} if after else {})}
        try:
            page = orjson.loads(c.call("GET", "/admin/ledger", query=q))
            rows, after = page["data"], page["next"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise AdminError(f"unexpected answer from the gateway: {e}") from None
        yield rows
        if after is None:
            return


def jsonl_writer(out: IO[str]) -> Callable[[dict[str, Any]], None]:
    """Each row as the API gave it (fields this CLI does not know included)."""
    def write(row: dict[str, Any]) -> None:
        out.write(orjson.dumps(row).decode() + "\n")
    return write


def csv_writer(out: IO[str]) -> Callable[[dict[str, Any]], None]:
    """A column per ledger field; dollars as every command prints them, none empty."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)

    def cell(name: str, value: Any) -> Any:
        if value is None:
            return ""
        return usd(value) if name in DOLLARS else value

    def write(row: dict[str, Any]) -> None:
        w.writerow([cell(name, row.get(name)) for name in COLUMNS])
    return write


def export(c: Client, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    q = window(args)
    try:  # the bar's total: how many rows the window holds
        total = int(orjson.loads(c.call("GET", "/admin/spend", query={"by": "kind", **q}))
                    ["total"]["requests"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        total = 0
    target: Path | None = args.out
    part = target.with_name(target.name + ".part") if target else None
    out = part.open("w", encoding="utf-8", newline="") if part else sys.stdout
    written = 0
    try:
        write = csv_writer(out) if args.format == "csv" else jsonl_writer(out)
        with tqdm(total=total or None, desc="ledger", unit="row", file=sys.stderr) as bar:
            for rows in pages(c, q, args.page_size):
                for row in rows:
                    write(row)
                written += len(rows)
                bar.update(len(rows))
    except BaseException:
        if part:
            out.close()
            part.unlink(missing_ok=True)  # a file is whole or not there
        raise
    if part and target:
        out.close()
        part.replace(target)
        print(f"wrote {written} rows to {target}", file=sys.stderr)


def page_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1-{MAX_PAGE}")
    return n


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ledger export` on the top-level `tollway` subparsers."""
    ledger = sub.add_parser("ledger", help="the ledger's rows, one per request")
    ls = ledger.add_subparsers(dest="ledger_command", required=True)
    e = ls.add_parser("export", parents=[common_options()],
                      help="every row of a window, in time order, as JSON lines or CSV "
                      "(a progress bar on stderr)")
    add_window(e)
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="jsonl: each row as the admin API gives it; csv: a column per field "
                   "(default: %(default)s)")
    e.add_argument("--out", type=Path, metavar="FILE",
                   help="write here (whole or not at all) instead of stdout")
    e.add_argument("--page-size", type=page_size, default=MAX_PAGE, metavar="N",
                   help="rows per request to the gateway (default: %(default)s)")
    e.set_defaults(func=run(export))
