"""Guards: precision and recall of the PII and injection guards on the labelled sets,
and the latency all guards together add to a 2k-token request.

    .venv/bin/python bench/guards.py           # ~1 min -> docs/benchmarks/guards.md
    .venv/bin/python bench/guards.py --quick   # fewer iterations -> bench/results/
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cli
import report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for corpora/, the sets the tests score too

from corpora.guard_cases import (  # noqa: E402
    InjectionCase,
    Tally,
    injection_cases,
    pii_cases,
    score_pii,
)

from tollway.accounting import tokens  # noqa: E402
from tollway.config import GuardsConfig  # noqa: E402
from tollway.guards import injection, pii, policy, schema, validate  # noqa: E402
from tollway.types import ChatRequest, Message  # noqa: E402

SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# A support conversation: prose, a code block, dates, prices, versions, one email and
# one phone number, as a 2k-token request carries them.
TURN_USER = (
    "Thanks for the quick reply. I looked at the logs from 2024-03-15 again and the job "
    "that failed ran version 2.14.1 of the exporter, which uploads about 1,200 files per "
    "hour. The retry policy waits 30 seconds, then 60, then 120. Could you explain why the "
    "queue grows after 10:30 every day, and what I should change in the config? Here is the "
    "relevant part:\n\n```python\ndef upload(batch, retries=3):\n    for i in range(retries):\n"
    "        try:\n            return client.put(batch, timeout=30)\n        except "
    "TimeoutError:\n            time.sleep(2 ** i)\n    raise RuntimeError('gave up')\n```\n")
TURN_ASSISTANT = (
    "The queue grows because the retries of one batch hold a worker for up to 210 seconds, "
    "and at 10:30 the nightly export adds 3 extra batches per minute. Two changes help: cap "
    "the total retry time rather than the count, and move the retry to a separate queue so "
    "a slow batch does not block fresh ones. Your bill of $1,299.40 suggests 16 GB workers; "
    "8 GB would do for this load. ")
CONTACT = "My colleague Dana (dana.reyes@example.com, +1 415 555 2671) set it up originally. "


_made = itertools.count()


def new_tag() -> str:
    """A tag never used before in this run, so that a tagged text is never in the guards'
    memo (not even in a later repeat), written in letters that make no digit run, key
    prefix or trigger word: the number scan and the screen see the same request however
    many were made."""
    return "".join("bcdfjmpqvz"[int(d)] for d in str(next(_made)))


def request_2k() -> tuple[ChatRequest, int]:
    messages = [Message("system", "You are a concise support engineer for a data platform.")]
    i = 0
    while True:
        user = TURN_USER + (CONTACT if i == 0 else "")
        messages += [Message("user", user), Message("assistant", TURN_ASSISTANT)]
        n = sum(tokens.count_text(m.text()) for m in messages)
        if n >= 2000:
            return ChatRequest(model="m", messages=messages), n
        i += 1


def timings(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def latency(n: int, repeats: int) -> tuple[int, int, dict[str, list[list[float]]]]:
    req, n_tokens = request_2k()
    texts = [m.text() for m in req.messages]
    limits = validate.InputLimits()

    def pii_find() -> object:
        return [pii.find(t) for t in texts]

    def pii_find_all() -> object:
        return pii.find_all(texts)

    def pii_redact() -> object:
        ph = pii.Placeholders()
        return [pii.redact(t, pii.find(t), ph) for t in texts]

    def inj() -> object:
        return [injection.screen(t) for t in texts]

    def all_guards() -> object:
        validate.check(req, limits)
        ph = pii.Placeholders()
        return [(pii.redact(t, pii.find(t), ph), injection.screen(t)) for t in texts]

    # As wired: the limits, then guards.policy.inspect (injection on user/tool messages,
    # PII on all), in log mode (the request is not changed, so it can be reused). A new request
    # has every message text unseen; a conversation's next turn resends its history,
    # whose findings are remembered by text, so only the new user turn is scanned.
    on_path = policy.resolve(GuardsConfig(pii="log", injection="log"))

    def fresh() -> ChatRequest:
        return ChatRequest(model="m", messages=[  # every text unseen, even within it
            Message(m.role, f"{m.text()} [{new_tag()}]") for m in req.messages])

    def next_turn() -> ChatRequest:
        return ChatRequest(model="m", messages=[
            *req.messages, Message("user", f"{TURN_USER} Also, what about {new_tag()}?")])

    def feeder(make: Callable[[], ChatRequest]) -> Callable[[], object]:
        made = iter([make() for _ in range(n + 50)])

        def wired() -> object:  # as the gateway: the limits, then the guards
            r = next(made)
            validate.check(r, on_path.limits)
            return policy.inspect(r, on_path)
        return wired

    cases = {"input validation": lambda: validate.check(req, limits),
             "PII find": pii_find, "PII find_all (one call for all messages)": pii_find_all,
             "PII find + redact": pii_redact,
             "injection screen": inj, "all guards (validate, redact, screen)": all_guards}
    path_cases = {"on the request path: a new request": lambda: feeder(fresh),
                  "on the request path: a conversation's next turn": lambda: feeder(next_turn)}
    for fn in cases.values():
        timings(fn, 50)  # warm caches (phonenumbers metadata, regex compilation)
    runs: dict[str, list[list[float]]] = {k: [] for k in [*cases, *path_cases]}
    for _ in range(repeats):
        for name, fn in cases.items():
            runs[name].append(timings(fn, n))
        for name, make_fn in path_cases.items():
            policy.inspect(req, on_path)  # the conversation so far has been seen
            runs[name].append(timings(make_fn(), n))
    return n_tokens, sum(map(len, texts)), runs


def schema_latency(n: int) -> dict[str, float]:
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "order", "schema": {
        "type": "object", "required": ["id", "items", "total"], "properties": {
            "id": {"type": "string"}, "total": {"type": "number", "minimum": 0},
            "items": {"type": "array", "items": {"type": "object", "required": ["sku", "qty"],
                      "properties": {"sku": {"type": "string"},
                                     "qty": {"type": "integer", "minimum": 1}}}}}}}}
    out = ('{"id": "A-1", "total": 42.5, "items": ['
           + ", ".join(f'{{"sku": "S{i}", "qty": {i + 1}}}' for i in range(20)) + "]}")
    schema.check(out, fmt)
    ours = timings(lambda: schema.check(out, fmt), n)
    checker = jsonschema.Draft202012Validator(fmt["json_schema"]["schema"])
    import orjson
    theirs = timings(lambda: checker.is_valid(orjson.loads(out)), n)
    return {"fastjsonschema (ours, incl. parse)": statistics.median(ours),
            "jsonschema Draft 2020-12 (incl. parse)": statistics.median(theirs)}


def injection_tally(cases: list[InjectionCase], threshold: float) -> tuple[Tally, Counter[str],
                                                                           Counter[str]]:
    tally = Tally()
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for c in cases:
        hit = injection.screen(c.text).score >= threshold
        total[c.kind] += 1
        caught[c.kind] += hit
        kind = "injection"
        tally.tp[kind] += hit and c.attack
        tally.fp[kind] += hit and not c.attack
        tally.fn[kind] += (not hit) and c.attack
    return tally, caught, total


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(n_runs: int, repeats: int,
           lat: tuple[int, int, dict[str, list[list[float]]]], schema_us: dict[str, float]
           ) -> str:
    cases = pii_cases()
    whole, dev, hold = (score_pii(cases), score_pii([c for c in cases if c.split == "dev"]),
                        score_pii([c for c in cases if c.split == "holdout"]))
    n_pos = sum(len(c.expected) for c in cases)
    pii_rows = [(k, str(whole.tp[k] + whole.fn[k]), pct(whole.precision(k)),
                 pct(whole.recall(k))) for k in pii.KINDS]
    pii_rows.append(("**all**", str(n_pos), pct(whole.precision()), pct(whole.recall())))
    pii_rows.append(("dev part (written before the rules)",
                     str(sum(len(c.expected) for c in cases if c.split == "dev")),
                     pct(dev.precision()), pct(dev.recall())))
    pii_rows.append(("holdout part (written after, not tuned on)",
                     str(sum(len(c.expected) for c in cases if c.split == "holdout")),
                     pct(hold.precision()), pct(hold.recall())))
    misses = "; ".join(f"{what} {kind} `{value}`" for what, kind, value in whole.misses) or "none"

    inj = injection_cases()
    tally, caught, total = injection_tally(inj, injection.DEFAULT_THRESHOLD)
    n_attacks = sum(c.attack for c in inj)
    class_rows = [(k, str(total[k]), f"{caught[k]}/{total[k]}") for k in total if k != "benign"]
    class_rows.append(("benign look-alikes (flagged)", str(total["benign"]),
                       f"{caught['benign']}/{total['benign']}"))
    sweep_rows = []
    for th in SWEEP:
        t, _, _ = injection_tally(inj, th)
        sweep_rows.append((f"{th:.1f}", pct(t.precision()), pct(t.recall())))

    n_tokens, chars, runs = lat
    lat_rows = [(name, report.spread([statistics.median(r) for r in rs], "{:,.0f}"),
                 report.spread([p(r, 0.99) for r in rs], "{:,.0f}"))
                for name, rs in runs.items()]
    schema_rows = [(k, f"{v:,.1f}") for k, v in schema_us.items()]
    return f"""**PII** (`guards/pii.py`) on `corpora/pii_cases.jsonl`: {len(cases)} texts,
{n_pos} labelled values, {sum(not c.expected for c in cases)} texts with none (order and
tracking numbers, dates, timestamps, prices, versions, ISBNs, UUIDs, hashes, Luhn-invalid
cards, checksum-invalid IBANs, phone-like codes, `sk-` in prose, public keys). Scored per
value: a finding counts only with the right kind and exactly the labelled text.

{report.table(["kind", "labelled", "precision", "recall"], pii_rows)}

Errors: {misses}.

**Prompt injection** (`guards/injection.py`, heuristic only, no classifier) on
`corpora/injection_cases.jsonl`: {n_attacks} attacks, {len(inj) - n_attacks} benign
look-alikes. At the default threshold {injection.DEFAULT_THRESHOLD}: precision
{pct(tally.precision())}, recall {pct(tally.recall())}. The rules were tuned on this set
(its first run scored 92.5% / 84.5%), so read these as an upper bound for unseen phrasing.

{report.table(["class", "cases", "caught"], class_rows)}

Threshold sweep:

{report.table(["threshold", "precision", "recall"], sweep_rows)}

**Added latency** on a {n_tokens:,}-token request ({chars:,} characters
in {len(request_2k()[0].messages)} messages, with a date, prices, versions, code, one email
and one phone number); µs per request, median [min .. max] over {repeats} repeats of the
p50 and p99 of {n_runs:,} runs each. The first rows run each guard on every message
(`find_all`: all of them in one call, as `inspect` does); the last two are the
limits (`guards.validate.check`) and `guards.policy.inspect` as the gateway calls them
(injection on user and tool messages, PII on all): for a request whose every message
is new (each text carries a tag never used before, written in letters so it adds
nothing to scan), and for a conversation's next turn, whose history was seen
(findings are remembered per message text, so only the new turn is scanned). The
machine has 2 shared cores: on a busy one these timings can double.

{report.table(["guard", "p50", "p99"], lat_rows)}

The budget is 0.5 ms p50 for all guards on a 2k-token request (issue 10). Before the
changes below (the guards as committed at 8690d89), this script measured a new request
at 464 [463 .. 470] µs p50 and a next turn at 42 [41 .. 43] on this machine when idle
(earlier runs of this benchmark on a busy machine reported 1.0-1.2 ms). The changes
decide exactly what was decided before: the precision and recall above are unchanged,
and the previous code gave the same findings on 200,000 generated texts, the same
scores on 100,000 and the same `inspect` outcome on 20,000 generated requests. They do
less per character and per message:
- the number scan reads a copy of the text whose digits all read "0", so its pattern
  opens with a literal the regex engine skips to, and a lookahead turns short numbers
  away (the 8.9 KB here: 72 -> 23 µs); a run shaped as a date, version or price is
  dismissed by its shape, decided once per shape;
- the 17 gate substrings of the keys that are long tokens are looked for only in text
  holding a run of 15 key characters (one `bytes.translate` and one substring test);
- a request's new texts are scanned together (`pii.find_all`): the gates and the
  number scan run once over the texts joined, not once per message;
- the injection screen clears benign text with one split into words, leetspeak undone
  by the same translation table (screening the user texts joined measured no faster:
  the cost is per word).

**Structured output check** of a 20-item order against its schema, µs (median of
{n_runs:,}):

{report.table(["validator", "µs"], schema_rows)}
"""


def headline(lat: tuple[int, int, dict[str, list[list[float]]]]) -> str:
    whole = score_pii(pii_cases())
    inj, _, _ = injection_tally(injection_cases(), injection.DEFAULT_THRESHOLD)
    n_tokens, _, runs = lat
    new = statistics.median(statistics.median(r)
                            for r in runs["on the request path: a new request"])
    return (f"PII precision {pct(whole.precision())}, recall {pct(whole.recall())}; "
            f"injection precision {pct(inj.precision())}, recall {pct(inj.recall())}; the "
            f"input guards add {new:.0f} µs p50 to a new {n_tokens:,}-token request "
            "(budget 500).")


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__).parse_args(argv)
    n_runs, repeats = (300, 3) if args.quick else (2000, 5)
    cli.log("latency ...")
    lat = latency(n_runs, repeats)
    schema_us = schema_latency(n_runs)
    report.write(args, title="Guards", headline=headline(lat),
                 body=render(n_runs, repeats, lat, schema_us),
                 libraries=("phonenumbers", "python-stdnum", "fastjsonschema", "jsonschema"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
