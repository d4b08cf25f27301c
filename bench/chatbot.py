"""A support chatbot's bill under the recommended policy, against a pass-through, on a
replayed trace — and what each of the policy's features saves on its own (an
ablation). Issue 19's acceptance: `examples/chatbot.yaml` at ≤ 15 % of the naive
bill, with no wrong cached answer.

The trace is bench/chatbot_trace.py's (seeded). `tollway replay` replays it under
`examples/naive.yaml` (every turn on gpt-4o, the whole history resent, no caps, no
cache), under `examples/chatbot.yaml`, and under the recommended policy with one
feature taken out at a time; each against its own simulator and gateway. The bill is
priced from the simulator's own per-model usage at the price table's rates — provider
prompt caching priced the same way on both sides (the naive side's resent history is
mostly a cached prefix: the honest baseline) — and the gateway's ledger beside it.

    .venv/bin/python bench/chatbot.py                  # 150 conversations
    .venv/bin/python bench/chatbot.py --quick          # 20 conversations -> bench/results/
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import chatbot_trace
import cli
import harness
import report
from tollway import replay
from tollway.accounting import prices, tokens
from tollway.types import Message, Usage

EXAMPLES = harness.ROOT / "examples"
Ablation = Callable[[dict[str, Any]], None]


def _no_cache(cfg: dict[str, Any]) -> None:
    cfg.pop("cache", None)


def _no_semantic(cfg: dict[str, Any]) -> None:
    cfg.setdefault("cache", {})["semantic"] = {"enabled": False}


def _no_history(cfg: dict[str, Any]) -> None:
    for m in cfg["models"].values():
        m.pop("history", None)


def _no_caps(cfg: dict[str, Any]) -> None:
    for m in cfg["models"].values():
        m.pop("default_max_tokens", None)
        m.pop("max_tokens_cap", None)


def _no_budget(cfg: dict[str, Any]) -> None:
    cfg.pop("budgets", None)


def _no_tiers(cfg: dict[str, Any]) -> None:
    cfg.pop("auto_downgrade", None)
    for m in cfg["models"].values():
        m.pop("route_by_turn", None)


# What the recommended policy does, one at a time (each applied if the policy has it).
ABLATIONS: dict[str, Ablation] = {
    "no response cache": _no_cache,
    "no semantic cache": _no_semantic,
    "whole history resent": _no_history,
    "no output caps": _no_caps,
    "no conversation budget": _no_budget,
    "no routing to the cheap tier": _no_tiers,
}


def configs(work: Path) -> list[tuple[str, Path]]:
    base = yaml.safe_load((EXAMPLES / "chatbot.yaml").read_text())
    out = [("naive pass-through", EXAMPLES / "naive.yaml"),
           ("recommended (examples/chatbot.yaml)", EXAMPLES / "chatbot.yaml")]
    for name, remove in ABLATIONS.items():
        cfg = copy.deepcopy(base)
        remove(cfg)
        if cfg == base:
            continue  # the policy has no such feature
        path = work / (name.replace(" ", "-") + ".yaml")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out.append((f"recommended, {name}", path))
    return out


def floor_usd(naive: replay.PolicyRun, trace: list[replay.Conversation],
              model: str = "gpt-4o") -> float:
    """A lower bound on any policy's bill for this trace: an oracle that knew each
    turn's label answers every turn a small model could answer for free, and every turn
    that needs the strong model on it with nothing but the system prompt and that turn
    (no history at all), writing the answer gpt-4o wrote in the naive run. The prompt
    is priced cached from 1,024 tokens, as OpenAI caches (simulate/prefix.py)."""
    price = prices.load_table().get(model)
    assert price is not None, f"no price for {model}"
    system = {id(t): c.system or "" for c in trace for t in c.turns}
    usd = 0.0
    for a in naive.answered:
        if a.turn.needs != "strong":
            continue
        prompt = tokens.count_messages([Message(role="system", content=system[id(a.turn)]),
                                        Message(role="user", content=a.turn.text)], model)
        cached = prompt // 128 * 128 if prompt >= 1024 else 0
        usd += prices.cost(Usage(prompt_tokens=prompt, cached_tokens=cached,
                                 completion_tokens=tokens.count_text(a.text, model)), price)
    return usd


def floor_section(naive: replay.PolicyRun, best: replay.PolicyRun, floor: float) -> str:
    def by_need(run: replay.PolicyRun, need: str) -> float:
        return sum(a.cost_usd or 0.0 for a in run.answered if a.turn.needs == need)

    total = naive.ledger_usd or 1.0
    strong = sum(a.turn.needs == "strong" for a in naive.answered)
    rows = [[name, f"{by_need(r, 'strong') / total:.1%}", f"{by_need(r, 'cheap') / total:.1%}"]
            for name, r in (("naive pass-through", naive), ("recommended", best))]
    return "\n\n".join([report.para(
        f"{strong} of the {len(naive.answered)} turns are labelled as needing gpt-4o. An "
        "oracle that knew every label — every other turn answered for free, each of "
        "those on gpt-4o with the system prompt and the turn alone (no history), writing "
        f"the answer gpt-4o wrote in the naive run — would pay {floor:.1%} of the naive "
        "bill (`floor_usd`): the strong turns' own answers and the system prompt they "
        "cannot do without. The bill by label, from the gateway's per-turn cost (a turn "
        "the user closed mid-stream reports none to the client: left out), as a share of "
        "the naive ledger:"),
        report.table(["policy", "turns needing gpt-4o", "the other turns"], rows)])


def render(names: list[str], runs: list[replay.PolicyRun], trace: list[replay.Conversation]
           ) -> tuple[str, str]:
    naive, best = runs[0], runs[1]
    rows = []
    for name, r in zip(names, runs, strict=True):
        n = len(r.answered)
        ok = [a for a in r.answered if a.status == 200]
        cheap = sum(1 for a in ok if a.model and "mini" in a.model)
        hits = sum(a.cache in ("hit", "semantic-hit") for a in r.answered)
        share = r.upstream_usd / naive.upstream_usd if naive.upstream_usd else float("nan")
        ledger_share = r.ledger_usd / naive.ledger_usd if naive.ledger_usd else float("nan")
        rows.append([name, f"${r.upstream_usd:.4f}", f"{share:.1%}", f"${r.ledger_usd:.4f}",
                     f"{ledger_share:.1%}", f"{cheap / max(len(ok), 1):.0%}", str(hits),
                     str(r.wrong_hits()), str(n - len(ok))])
    table = report.table(["policy", "bill: upstream usage", "of naive", "bill: ledger",
                          "of naive", "turns on the cheap model", "cache hits",
                          "wrong hits", "refused"], rows)
    kinds = Counter(t.kind for c in trace for t in c.turns)
    share = best.upstream_usd / naive.upstream_usd if naive.upstream_usd else float("nan")
    ok = [a for a in best.answered if a.status == 200]
    cheap = sum(1 for a in ok if a.model and "mini" in a.model) / max(len(ok), 1)
    floor = floor_usd(naive, trace) / naive.upstream_usd if naive.upstream_usd else 0.0
    headline = (f"`examples/chatbot.yaml` costs {share:.1%} of the naive pass-through "
                f"(goal ≤ 15 %), {best.wrong_hits()} wrong cached answers, "
                f"{cheap:.0%} of answered turns on the cheap model. No policy can go "
                f"below {floor:.1%} on this trace (an oracle's floor, below).")
    body = "\n\n".join([
        "## Method", (__doc__ or "").split("\n\n")[1], (__doc__ or "").split("\n\n")[2],
        report.para(f"The trace: {len(trace)} conversations, {sum(kinds.values())} turns "
                    f"({', '.join(f'{v} {k}' for k, v in kinds.most_common())})."),
        "## Bills", table, "## What no policy can cut", floor_section(naive, best, floor)])
    return headline, body


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--conversations", type=int, default=150)
    ap.add_argument("--seed", type=int, default=19)
    args = ap.parse_args(argv)
    n = 20 if args.quick else args.conversations
    with tempfile.TemporaryDirectory(prefix="bench-chatbot-") as tmp:
        work = Path(tmp)
        trace_path = work / "trace.jsonl"
        chatbot_trace.main(["--conversations", str(n), "--seed", str(args.seed),
                            "--out", str(trace_path)])
        harness.COMMANDS.append(f".venv/bin/python bench/chatbot_trace.py --conversations {n} "
                                f"--seed {args.seed} --out $W/trace.jsonl")
        named = configs(work)
        for _, path in named:
            harness.COMMANDS.append(f".venv/bin/tollway replay $W/trace.jsonl --config "
                                    f"{harness.shown_path(str(path)).replace(tmp, '$W')}")
        trace = replay.load_trace(trace_path)
        runs = []
        for name, path in named:
            cli.log(f"replaying under {name}")
            runs.append(asyncio.run(replay.run_policy(path.resolve(), trace, "gpt-4o", 8)))
        shown = "\n".join(harness.COMMANDS)
    headline, body = render([n for n, _ in named], runs, trace)
    report.write(args, title="A chatbot's bill, replayed", headline=headline,
                 body=body + f"\n\n## Commands\n\n```sh\n{shown}\n```",
                 libraries=["aiohttp"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
