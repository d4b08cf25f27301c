"""`tollway serve | simulate | tokens | check-config | cache eval`; the commands of
admin_cli.py, ledger_cli.py and batch_cli.py registered."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tollway.errors import ConfigError
from tollway.version import __version__

CONFIG_HELP = ("the configuration file (default: TOLLWAY_CONFIG, else ./tollway.yaml, "
               "else the embedded zero-setup one)")


def _serve(args: argparse.Namespace) -> int:
    import math
    import os

    # Before numpy loads: the semantic cache's embeddings run on one thread of their
    # own; a BLAS pool on every core would fight the event loop for them (p99 x20).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from tollway import config as config_mod
    from tollway.server.app import Source, create_app
    from tollway.server.connections import GuardedHttpProtocol

    cfg = config_mod.load(args.config)
    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    workers = args.workers or 1
    if workers > 1 and not cfg.store.shared:
        raise ConfigError("--workers: more than one worker needs the shared store "
                          "(store: {redis_url, postgres_url}): with the embedded one each "
                          "worker would keep its own budgets and limits")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s "
                        "%(name)s %(message)s")
    if workers > 1 and args.config:  # each worker builds its app from the same file
        os.environ["TOLLWAY_CONFIG"] = os.path.abspath(args.config)
    server = uvicorn.Config(
        "tollway.server.app:app_from_environment" if workers > 1
        else create_app(cfg, Source(config_mod.source(args.config))),
        factory=workers > 1, workers=workers, host=host, port=port, loop="uvloop",
        http=GuardedHttpProtocol, lifespan="on", access_log=False, proxy_headers=False,
        log_level=args.log_level,
        # Later than the drain's own deadline, so the drain ends what still runs (with
        # an error event and a ledger row) and uvicorn never has to cut it.
        timeout_graceful_shutdown=math.ceil(cfg.server.drain_seconds) + 5)
    try:  # a busy port fails here, before anything says "serving"
        sock = server.bind_socket()
    except SystemExit:  # uvicorn has said why (e.g. "Address already in use")
        print(f"tollway: cannot listen on {host}:{port}; is another server using it? "
              "(--port chooses another)", file=sys.stderr)
        return 1
    from tollway.server import startup

    at = startup.Listening(__version__, host, port, workers, config_mod.source(args.config))
    print("\n".join([startup.essential(cfg, at)] if args.quiet else startup.report(cfg, at)),
          flush=True)
    if workers > 1:
        Multiprocess(server, sockets=[sock]).run()
    else:
        uvicorn.Server(server).run(sockets=[sock])
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from tqdm import tqdm

    from tollway import config as config_mod
    from tollway.store.postgres import migrate, migrations

    url = args.postgres_url or config_mod.load(args.config).store.postgres_url
    if not url:
        raise ConfigError("migrate: give --postgres-url or a config with "
                          "store.postgres_url")
    # One over a large ledger can take minutes: the bar says which is under way.
    with tqdm(total=len(migrations()), desc="migrations", unit="migration",
              file=sys.stderr) as bar:
        def done(version: int) -> None:
            bar.set_postfix_str(f"{version:04d} checked", refresh=False)
            bar.update()
        applied = asyncio.run(migrate(url, done))
    print(f"applied migrations {applied}" if applied else "the schema is up to date")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from tollway.simulate import server

    server.main(args)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from tollway import config as config_mod
    from tollway.config import served

    cfg = config_mod.load(args.config)
    if not cfg.models:  # valid, but every request would be answered 404
        print("tollway: warning: the configuration serves no model: every request would "
              "be refused. Add one under `models:` (tollway.example.yaml has examples).",
              file=sys.stderr)
        return 1
    print(f"ok: serves {served.summary(cfg)}")
    return 0


def _tokens(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tollway import config as config_mod
    from tollway.accounting.estimate import estimate, parse_input, render, served_by
    from tollway.accounting.prices import load_table
    from tollway.config import served
    from tollway.errors import InvalidRequest

    cfg = config_mod.load(args.config)
    table = load_table(cfg.prices)
    entries = served_by(cfg, table)
    if args.model:  # before reading the input, which may be a terminal's
        name = served.target(cfg, args.model)
        if not any(e[0] == name for e in entries):
            print(f"tollway: {served.unknown(cfg, args.model, [e[0] for e in entries])}",
                  file=sys.stderr)
            return 1
        entries = [e for e in entries if e[0] == name]
    if args.file in (None, "-"):
        raw = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                raw = f.read()
        except OSError as e:
            print(f"tollway: cannot read {args.file}: {e.strerror}", file=sys.stderr)
            return 1
    try:
        source = parse_input(raw)
    except InvalidRequest as e:
        print(f"tollway: {e.message}", file=sys.stderr)
        return 1
    # Each model's tokenizer loads on first use: a second or more apiece.
    rows = estimate(source, cfg, table, tqdm(entries, desc="counting", unit="model",
                                             file=sys.stderr, leave=False))
    print(render(rows, source))
    return 0


def _cache_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tollway.cache import evaluate

    try:
        pairs = evaluate.load_pairs(Path(args.pairs), args.limit)
    except OSError as e:
        print(f"tollway: cannot read {args.pairs}: {e.strerror}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"tollway: {e}", file=sys.stderr)
        return 1
    if not pairs:
        print(f"tollway: {args.pairs}: no pairs", file=sys.stderr)
        return 1
    from tqdm import tqdm

    from tollway.cache.verify import threshold_of

    # Embedding 1,500 pairs takes most of a minute on two cores: the bar says how far.
    with tqdm(total=evaluate.distinct_texts(pairs), desc="embedding", unit="text",
              file=sys.stderr) as bar:
        result = evaluate.evaluate(pairs, threshold_of(args.mode, args.threshold),
                                   show_wrong=args.show_wrong, show_misses=args.show_misses,
                                   progress=bar.update)
    print(json.dumps(result.as_json()) if args.json else evaluate.render(result))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from tollway import replay

    return replay.main(args.trace, args.config, args.model, args.concurrency, args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tollway", description="A production LLM gateway.")
    p.add_argument("--version", action="version", version=f"tollway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the OpenAI/Anthropic-compatible API")
    s.add_argument("--config", help=CONFIG_HELP)
    s.add_argument("--host", help="default 127.0.0.1 (or server.host)")
    s.add_argument("--port", type=int, help="default 4000 (or server.port)")
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes (default: %(default)s; more than one needs the "
                   "shared store)")
    s.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="the least severe log lines shown on stderr (default: %(default)s)")
    s.add_argument("--quiet", action="store_true",
                   help="print only the line saying where it serves, not the start-up report")
    s.set_defaults(func=_serve)

    sim = sub.add_parser("simulate", help="an OpenAI/Anthropic-compatible upstream simulator")
    from tollway.simulate import server as sim_server

    sim_server.add_cli_args(sim)
    sim.set_defaults(func=_simulate)

    m = sub.add_parser("migrate", help="apply the shared store's PostgreSQL migrations")
    m.add_argument("--config", help=CONFIG_HELP + "; its store.postgres_url")
    m.add_argument("--postgres-url", help="default: store.postgres_url of the config")
    m.set_defaults(func=_migrate)

    c = sub.add_parser("check-config", help="validate a configuration, say what it serves "
                       "and exit (1: an error, or a configuration that serves no model)")
    c.add_argument("--config", help=CONFIG_HELP)
    c.set_defaults(func=_check_config)

    t = sub.add_parser("tokens", help="tokens and input cost of a text or messages JSON "
                       "on each configured model")
    t.add_argument("file", nargs="?", help="a text file or a messages JSON; - or none: stdin")
    t.add_argument("--config", help=CONFIG_HELP + "; its models are priced")
    t.add_argument("--model", help="only this model (a name, alias or tier:NAME the "
                   "configuration serves; another is an error)")
    t.set_defaults(func=_tokens)

    cache = sub.add_parser("cache", help="the response cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    ev = cache_sub.add_parser("eval", help="precision, recall and hit rate of the semantic "
                              "cache on labelled pairs (JSON lines {a, b, same})")
    ev.add_argument("pairs", help="a JSON-lines file of {\"a\", \"b\", \"same\"}")
    ev.add_argument("--threshold", type=float,
                    help="match-score threshold (default: the mode's calibrated one)")
    ev.add_argument("--mode", choices=["strict", "balanced"], default="strict",
                    help="the operating point (cache.semantic.mode); default strict")
    ev.add_argument("--show-wrong", action="store_true",
                    help="list the pairs served though labelled different")
    ev.add_argument("--show-misses", action="store_true",
                    help="list the pairs labelled same that were not served")
    ev.add_argument("--limit", type=int, help="only the first N pairs")
    ev.add_argument("--json", action="store_true", help="one JSON object")
    ev.set_defaults(func=_cache_eval)

    r = sub.add_parser("replay", help="what each policy would cost on a trace of "
                       "conversations, replayed against the simulator")
    r.add_argument("trace", type=Path, help="a JSON-lines trace (bench/chatbot_trace.py)")
    r.add_argument("--config", type=Path, action="append", required=True,
                   help="a tollway.yaml to price (repeat: the first is the baseline)")
    r.add_argument("--model", default="gpt-4o", help="the model the app asks for")
    r.add_argument("--concurrency", type=int, default=8, help="conversations at once")
    r.add_argument("--json", type=Path, help="also write every turn's outcome here")
    r.set_defaults(func=_replay)

    from tollway import admin_cli

    admin_cli.add_commands(sub)  # keys create|list|revoke|rotate, spend, conversations
    from tollway import ledger_cli

    ledger_cli.add_commands(sub)  # ledger export
    from tollway import batch_cli

    batch_cli.add_commands(sub)  # batch submit|status|results|cancel|list
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"tollway: configuration error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
