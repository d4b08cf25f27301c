"""`tollway keys create|list|revoke|rotate`, `tollway spend` and `tollway conversations
list|show|delete`: the admin API from a shell.

They talk to a running gateway over HTTP, because the store belongs to the server
process. `--url` defaults to TOLLWAY_URL, else where the configuration's gateway
listens (server.host and server.port of --config, $TOLLWAY_CONFIG or ./tollway.yaml, as
`tollway serve` reads them), else http://127.0.0.1:4000; the master key to
TOLLWAY_MASTER_KEY (better than --master-key, which shows in `ps` and shell history).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import msgspec
import orjson

from tollway import relative_time
from tollway.accounting.money import usd_column
from tollway.accounting.rows import SPEND_GROUPS, SpendRow
from tollway.config import Budget, check_budget, load_server
from tollway.errors import ConfigError
from tollway.keys import KeyState

DEFAULT_URL = "http://127.0.0.1:4000"
# The two kinds of model name, never mixed in one report: the one the app asked for, and
# the deployment that answered it.
GROUP_HEADERS = {"model": "MODEL ASKED", "upstream": "UPSTREAM (PROVIDER/MODEL)"}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
T = TypeVar("T")


class AdminError(Exception):
    """What went wrong, as printed after 'tollway: '."""


class KeyView(KeyState, kw_only=True):
    """The server's public view of a key."""

    status: str = ""


class Issued(msgspec.Struct):
    """The answer to create and rotate: the one time a secret is shown."""

    key: str
    record: KeyView
    old: KeyView | None = None


class KeyList(msgspec.Struct):
    data: list[KeyView]


class SpendReport(msgspec.Struct):
    by: str
    data: list[SpendRow]
    total: SpendRow


@dataclass(frozen=True, slots=True)
class Client:
    url: str
    master_key: str
    origin: str = "--url"  # where the URL came from, for when nothing answers there
    timeout: float = 30.0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None) -> bytes:
        url = self.url.rstrip("/") + path
        if query:
            url += "?" + urlencode(query)
        req = urllib.request.Request(
            url, method=method, data=None if body is None else orjson.dumps(body),
            headers={"Authorization": f"Bearer {self.master_key}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data: bytes = r.read()
                return data
        except urllib.error.HTTPError as e:
            raise AdminError(error_message(e.code, e.read(), self.url)) from None
        except urllib.error.URLError as e:
            raise AdminError(f"cannot reach the gateway at {self.url} ({e.reason}; the URL "
                             f"is {self.origin}). Is `tollway serve` running there? Set "
                             "--url or TOLLWAY_URL.") from None
        except OSError as e:  # a timeout or a reset while reading
            raise AdminError(f"the gateway at {self.url} did not answer: {e}") from None


def error_message(status: int, body: bytes, url: str) -> str:
    """The OpenAI-shaped error's message, else a plain description."""
    try:
        message = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status} from {url} (is it a Tollway gateway?)"
    return str(message)


def decode(data: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError
        raise AdminError(f"unexpected answer from the gateway: {e}") from None


def gateway_url(url: str | None, config: str | None) -> tuple[str, str]:
    """(the gateway's URL, where it came from): `url` (an option), else TOLLWAY_URL,
    else where the configuration's server listens."""
    if url:
        return url, "--url"
    if env := os.environ.get("TOLLWAY_URL"):
        return env, "TOLLWAY_URL"
    server, path = load_server(config)
    if path is None:
        return DEFAULT_URL, "the default"
    return listen_url(server.host, server.port), f"server.host/port of {path}"


def listen_url(host: str, port: int) -> str:
    """The URL that reaches a server listening on host:port from this machine."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def client(args: argparse.Namespace) -> Client:
    url, origin = gateway_url(args.url, args.config)
    key = args.master_key or os.environ.get("TOLLWAY_MASTER_KEY")
    if not key:
        raise AdminError("no master key: set TOLLWAY_MASTER_KEY (or pass --master-key)")
    return Client(url, key, origin)


# --- parsing ---------------------------------------------------------------------------

_BUDGET = re.compile(r"(?:\$(?P<dollars>\d+(?:\.\d+)?)|(?P<n>\d+(?:\.\d+)?)(?P<unit>usd|tokens))"
                     r"(?:/(?P<period>day|month|total))?")


def parse_budget(text: str) -> Budget:
    """10usd/day, $10/day, 100000tokens/month, 5usd/total (no period: per day)."""
    m = _BUDGET.fullmatch(text.strip().lower())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected AMOUNT usd|tokens [/day|/month|/total], e.g. 10usd/day")
    if m["unit"] == "tokens" and "." in m["n"]:
        raise argparse.ArgumentTypeError(f"{text!r}: tokens are a whole number")
    limit = {"tokens": int(m["n"])} if m["unit"] == "tokens" else {
        "usd": float(m["dollars"] or m["n"])}
    b = msgspec.convert({"period": m["period"] or "day", **limit}, Budget)
    try:
        check_budget(b, text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return b


def parse_duration(text: str) -> float:
    """Seconds from 90, 90s, 15m, 12h, 30d, 2w."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", text.strip().lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 90s, 15m, "
                                         "12h, 30d or 2w")
    return float(m[1]) * DURATION_UNITS[m[2] or "s"]


# --- formatting ------------------------------------------------------------------------

def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """Aligned columns; the indices in `right` are right-aligned (numbers)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        return "  ".join(cells).rstrip()
    return "\n".join(line(r) for r in [header, *rows])


def budget_text(b: Budget) -> str:
    amount = f"${b.usd:g}" if b.usd is not None else f"{b.tokens} tokens"
    return f"{amount} total" if b.period == "total" else f"{amount}/{b.period}"


def limits_text(k: KeyView) -> str:
    parts = [f"{k.rpm} rpm"] if k.rpm else []
    parts += [f"{k.tpm} tpm"] if k.tpm else []
    parts += [budget_text(b) for b in k.budgets]
    return ", ".join(parts) or "-"


def keys_table(keys: list[KeyView]) -> str:
    if not keys:
        return "no keys yet (tollway keys create)"
    header = ["ID", "NAME", "KEY", "USER", "TEAM", "FEATURES", "MODELS", "LIMITS", "EXPIRES",
              "STATUS"]
    rows = [[k.id, k.name or "-", k.hint, k.user or "-", k.team or "-",
             ",".join(k.features) or "-", ",".join(k.models) or "all", limits_text(k),
             when(k.expires_at), k.status + (f" -> {k.replaced_by}" if k.replaced_by else "")]
            for k in keys]
    return table(header, rows, right=set())


def spend_table(report: SpendReport) -> str:
    rows = [*report.data, msgspec.structs.replace(report.total, group="TOTAL")]
    saved = any(r.saved_usd for r in rows)  # the column only matters once caching saves
    header = [GROUP_HEADERS.get(report.by, report.by.upper()), "REQUESTS", "INPUT TOKENS",
              "OUTPUT TOKENS", "COST USD"]
    header += ["SAVED USD"] if saved else []
    costs = usd_column([r.cost_usd for r in rows])
    savings = usd_column([r.saved_usd for r in rows])
    body = []
    for r, cost, save in zip(rows, costs, savings, strict=True):
        cells = [r.group, str(r.requests), str(r.input_tokens), str(r.output_tokens), cost]
        body.append(cells + ([save] if saved else []))
    return table(header, body, right=set(range(1, len(header))))


def spend_csv(report: SpendReport) -> None:
    """Groups only (a total row would be counted twice by whoever sums the file); the
    dollars as the table prints them."""
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow([report.by, "requests", "input_tokens", "output_tokens", "cost_usd",
                "saved_usd"])
    costs = usd_column([r.cost_usd for r in report.data])
    savings = usd_column([r.saved_usd for r in report.data])
    for r, cost, save in zip(report.data, costs, savings, strict=True):
        w.writerow([r.group, r.requests, r.input_tokens, r.output_tokens, cost, save])


def print_json(data: bytes) -> None:
    print(orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode())


# --- commands --------------------------------------------------------------------------

def create(c: Client, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "user": args.user, "team": args.team,
                            "features": args.feature, "models": args.model, "rpm": args.rpm,
                            "tpm": args.tpm,
                            "budgets": msgspec.to_builtins(args.budget or []) or None,
                            "expires_in_seconds": args.expires}
    data = c.call("POST", "/admin/keys", {k: v for k, v in body.items() if v is not None})
    if args.format == "json":
        print_json(data)
        return
    issued = decode(data, Issued)
    print(f"id:  {issued.record.id}\nkey: {issued.key}")
    print("Store the key now: it is not shown again.", file=sys.stderr)


def list_keys(c: Client, args: argparse.Namespace) -> None:
    data = c.call("GET", "/admin/keys")
    if args.format == "json":
        print(orjson.dumps(orjson.loads(data)["data"], option=orjson.OPT_INDENT_2).decode())
        return
    print(keys_table(decode(data, KeyList).data))


def revoke(c: Client, args: argparse.Namespace) -> None:
    k = decode(c.call("POST", f"/admin/keys/{args.id}/revoke"), KeyView)
    print(f"revoked {k.id} ({k.name or 'unnamed'}, {k.hint}): it is refused from now on")


def rotate(c: Client, args: argparse.Namespace) -> None:
    body = {} if args.grace is None else {"grace_seconds": args.grace}
    data = c.call("POST", f"/admin/keys/{args.id}/rotate", body)
    if args.format == "json":
        print_json(data)
        return
    issued = decode(data, Issued)
    print(f"id:  {issued.record.id}\nkey: {issued.key}")
    if issued.old is not None:
        print(f"The old key {issued.old.id} works until {when(issued.old.expires_at)}. "
              "Store the new key now: it is not shown again.", file=sys.stderr)


def window(args: argparse.Namespace) -> dict[str, str]:
    """--since and --until as the admin API takes them (those given)."""
    now = time.time()  # one clock for both ends: `--since 1d --until 1h` is a window
    q = {}
    for name, text in (("since", args.since), ("until", args.until)):
        if text:
            try:
                q[name] = relative_time.resolve(text, now, end=name == "until")
            except ValueError as e:
                raise AdminError(f"{name}: {e}") from None
    return q


def spend(c: Client, args: argparse.Namespace) -> None:
    q = {"by": args.by, **window(args)}
    data = c.call("GET", "/admin/spend", query=q)
    if args.format == "json":
        print_json(data)
        return
    report = decode(data, SpendReport)
    if args.format == "csv":
        spend_csv(report)
    else:
        print(spend_table(report))


def conversations_list(c: Client, args: argparse.Namespace) -> None:
    q = {"limit": str(args.limit), **({"owner": args.owner} if args.owner else {})}
    data = c.call("GET", "/admin/conversations", query=q)
    if args.format == "json":
        print(orjson.dumps(orjson.loads(data)["data"], option=orjson.OPT_INDENT_2).decode())
        return
    found = orjson.loads(data)["data"]
    costs = usd_column([v["cost_usd"] for v in found])
    rows = [[v["owner"], v["id"], str(v["turns"]), str(v["tokens"]), cost,
             when(v["updated_at"])] for v, cost in zip(found, costs, strict=True)]
    print(table(["owner", "id", "messages", "tokens", "cost", "updated"], rows, {2, 3, 4}))


def conversation_show(c: Client, args: argparse.Namespace) -> None:
    print_json(c.call("GET", f"/admin/conversations/{args.id}", query={"owner": args.owner}))


def conversation_delete(c: Client, args: argparse.Namespace) -> None:
    c.call("DELETE", f"/admin/conversations/{args.id}", query={"owner": args.owner})
    print(f"deleted conversation {args.id} of {args.owner} (its turns and summaries)")


Command = Callable[[Client, argparse.Namespace], None]


def run(command: Command) -> Callable[[argparse.Namespace], int]:
    def main(args: argparse.Namespace) -> int:
        try:
            command(client(args), args)
        except AdminError as e:
            print(f"tollway: {e}", file=sys.stderr)
            return 1
        return 0
    return main


def add_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="from: a UTC date or datetime (2026-11-01, "
                   "2026-11-01T12:00:00Z), epoch seconds, or a time before now (30m, 1h, 7d, "
                   "2w, today, yesterday)")
    p.add_argument("--until", help="to, not included: the same forms; a date, today or "
                   "yesterday includes that whole day")


def common_options() -> argparse.ArgumentParser:
    """--url, --config and --master-key, for every command over the admin API."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway (default: TOLLWAY_URL, else server.host "
                        f"and server.port of the configuration, else {DEFAULT_URL})")
    common.add_argument("--config", help="the gateway's configuration, for its address "
                        "(default: TOLLWAY_CONFIG, else ./tollway.yaml)")
    common.add_argument("--master-key", help="default: TOLLWAY_MASTER_KEY (prefer it: an "
                        "argument shows in ps and shell history)")
    return common


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `keys` and `spend` on the top-level `tollway` subparsers."""
    common = common_options()

    keys = sub.add_parser("keys", help="create, list, revoke and rotate virtual keys")
    ks = keys.add_subparsers(dest="keys_command", required=True)

    c = ks.add_parser("create", parents=[common], help="make a key (its secret is shown once)")
    c.add_argument("--name", help="a label for people (shown by keys list)")
    c.add_argument("--user", help="the owner, charged when a request names no end user")
    c.add_argument("--team", help="the team charged for its requests (team budgets, "
                   "spend --by team)")
    c.add_argument("--feature", action="append", metavar="TAG",
                   help="a feature tag (repeatable); the first is the default of its requests")
    c.add_argument("--model", action="append", metavar="M",
                   help="an allowed model or alias (repeatable); none: all")
    c.add_argument("--rpm", type=int, help="requests per minute")
    c.add_argument("--tpm", type=int, help="tokens per minute")
    c.add_argument("--budget", action="append", type=parse_budget, metavar="LIMIT",
                   help="10usd/day, 100000tokens/month, 50usd/total (repeatable)")
    c.add_argument("--expires", type=parse_duration, metavar="DURATION",
                   help="lifetime, e.g. 12h, 30d")
    c.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: the whole answer, the key's record with it (default: text)")
    c.set_defaults(func=run(create))

    ls = ks.add_parser("list", parents=[common], help="every key (never their secrets)")
    ls.add_argument("--format", choices=["table", "json"], default="table",
                    help="json: the records as the admin API gives them (default: table)")
    ls.set_defaults(func=run(list_keys))

    r = ks.add_parser("revoke", parents=[common], help="refuse a key from now on")
    r.add_argument("id", help="the key's id (key_…)")
    r.set_defaults(func=run(revoke))

    ro = ks.add_parser("rotate", parents=[common], help="a new key with the same settings; "
                       "the old one keeps working for a grace period")
    ro.add_argument("id", help="the key's id (key_…)")
    ro.add_argument("--grace", type=parse_duration, metavar="DURATION",
                    help="how long the old key keeps working (default 1 day; 0: not at all)")
    ro.add_argument("--format", choices=["text", "json"], default="text",
                    help="json: the whole answer, both keys' records (default: text)")
    ro.set_defaults(func=run(rotate))

    cv = sub.add_parser("conversations", help="list, show and delete server-side "
                        "conversations (every owner's)")
    cs = cv.add_subparsers(dest="conversations_command", required=True)
    cl = cs.add_parser("list", parents=[common], help="the most recently updated first")
    cl.add_argument("--owner", help="one owner's only (a key's lineage, or lineage/user)")
    cl.add_argument("--limit", type=int, default=100,
                    help="at most this many (default: %(default)s)")
    cl.add_argument("--format", choices=["table", "json"], default="table",
                    help="json: as the admin API gives them (default: table)")
    cl.set_defaults(func=run(conversations_list))
    for name, fn, what in (("show", conversation_show, "its system prompt and turns (JSON)"),
                           ("delete", conversation_delete, "for good, with its summaries")):
        one = cs.add_parser(name, parents=[common], help=what)
        one.add_argument("id", help="the conversation's id (see conversations list)")
        one.add_argument("--owner", required=True,
                         help="ids are unique per owner: see `conversations list`")
        one.set_defaults(func=run(fn))

    s = sub.add_parser("spend", parents=[common], help="spend from the ledger, grouped")
    s.add_argument("--by", choices=SPEND_GROUPS, default="day",
                   help="what a row of the report is: a UTC day (the default), the model "
                   "asked for (an alias, tier:NAME, ...), the upstream provider/model that "
                   "answered, the key, user, team, feature, kind (chat, embeddings) or batch")
    add_window(s)
    s.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="csv: the groups without a total row; json: the admin API's answer "
                   "(default: table)")
    s.set_defaults(func=run(spend))
