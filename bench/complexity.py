"""The complexity router (issue 19): how well it tells a turn the cheap tier can answer
from one that needs the strong one, on the held-out split of the labelled support-chat
turns (corpora/complexity_turns.jsonl, written by corpora/complexity_cases.py; the
held-out split is whole families of phrasings the classifier never saw).

Each turn goes through what the gateway runs (policy/complexity.py): the rules, then,
for what they leave open, the classifier on the turn's all-MiniLM-L6-v2 embedding with
its shipped weights (src/tollway/policy/complexity.json, from bench/train_complexity.py).
Reported: accuracy per class, how often a turn labelled strong went cheap (goal
<= 5 %), who decided, and what a decision costs on the request path.

    .venv/bin/python bench/complexity.py            # ~15 s
    .venv/bin/python bench/complexity.py --quick    # the same -> bench/results/
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import cli
import harness
import report
from tollway.cache.embed import default_embedder
from tollway.policy.complexity import load_classifier, rules

CASES = harness.ROOT / "corpora" / "complexity_turns.jsonl"


def _rows(split: str) -> list[dict[str, object]]:
    rows = [json.loads(x) for x in Path(CASES).read_text().splitlines() if x.strip()]
    return [r for r in rows if r["split"] == split]


def measure(split: str) -> dict[str, object]:
    rows = _rows(split)
    clf = load_classifier()
    emb = default_embedder()
    t0 = time.perf_counter()
    ruled = [rules(str(r["text"]), bool(r["context"])) for r in rows]
    rules_us = (time.perf_counter() - t0) / len(rows) * 1e6
    open_ = [i for i, v in enumerate(ruled) if v is None]
    emb.embed(["warm up"])
    t0 = time.perf_counter()
    vectors = [emb.embed([str(rows[i]["text"])])[0] for i in open_]  # one at a time, as served
    embed_ms = (time.perf_counter() - t0) / max(len(open_), 1) * 1e3
    strong = [v.strong if v is not None else False for v in ruled]
    by = ["rules" if v is not None else "classifier" for v in ruled]
    for i, vec in zip(open_, vectors, strict=True):
        strong[i] = clf.verdict(vec).strong
    counts: Counter[tuple[str, str, str]] = Counter()
    for r, s, who in zip(rows, strong, by, strict=True):
        counts[(str(r["label"]), "strong" if s else "cheap", who)] += 1
    return {"split": split, "n": len(rows), "counts": counts, "rules_us": rules_us,
            "embed_ms": embed_ms, "open": len(open_), "threshold": clf.threshold,
            "misses": [(r["text"], r["context"]) for r, s in zip(rows, strong, strict=True)
                       if r["label"] == "strong" and not s],
            "over": [(r["text"], r["context"]) for r, s in zip(rows, strong, strict=True)
                     if r["label"] == "cheap" and s]}


def _n(c: Counter[tuple[str, str, str]], label: str, to: str | None = None,
       who: str | None = None) -> int:
    return sum(v for (lab, t, w), v in c.items()
               if lab == label and (to is None or t == to) and (who is None or w == who))


def render(held: dict[str, object], train: dict[str, object]) -> tuple[str, str]:
    c: Counter[tuple[str, str, str]] = held["counts"]  # type: ignore[assignment]
    strong_n, cheap_n = _n(c, "strong"), _n(c, "cheap")
    miss = _n(c, "strong", "cheap") / strong_n
    acc_cheap = _n(c, "cheap", "cheap") / cheap_n
    acc_strong = _n(c, "strong", "strong") / strong_n
    total = (_n(c, "cheap", "cheap") + _n(c, "strong", "strong")) / (strong_n + cheap_n)
    headline = (f"on {held['n']} held-out support-chat turns, {acc_cheap:.0%} of the turns a "
                f"cheap model can answer go cheap and {acc_strong:.0%} of those needing the "
                f"strong model stay strong: {miss:.1%} of strong turns went to the cheap "
                f"model (goal <= 5 %); a decision costs {held['rules_us']:.0f} µs of rules, "
                f"plus ~{held['embed_ms']:.0f} ms of embedding for the "
                f"{held['open']} turns ({held['open'] / held['n']:.0%}) they leave open.")
    rows = []
    for name, r in (("held-out (test)", held), ("training", train)):
        cc: Counter[tuple[str, str, str]] = r["counts"]  # type: ignore[assignment]
        s, ch = _n(cc, "strong"), _n(cc, "cheap")
        rows.append([name, str(r["n"]), f"{ch}", f"{_n(cc, 'cheap', 'cheap') / ch:.1%}",
                     f"{s}", f"{_n(cc, 'strong', 'strong') / s:.1%}",
                     f"{_n(cc, 'strong', 'cheap') / s:.1%}",
                     f"{(_n(cc, 'cheap', 'cheap') + _n(cc, 'strong', 'strong')) / (s + ch):.1%}"])
    who = []
    for lab in ("cheap", "strong"):
        for w in ("rules", "classifier"):
            n = _n(c, lab, None, w)
            right = _n(c, lab, lab, w)
            who.append([lab, w, str(n), f"{right / n:.1%}" if n else "-"])
    misses = "\n".join(f"- `{t}` (earlier turns hard: {ctx})" for t, ctx in held["misses"]  # type: ignore[attr-defined]
                       ) or "- none"
    body = "\n\n".join([
        report.para(f"""Each turn is a customer's latest message in a support chat, with
        whether the conversation had already needed the strong model, labelled `cheap`
        (a small model answers it as well) or `strong`. The held-out split is whole
        families of phrasings (other acknowledgements, other FAQs, other hard questions)
        that training never saw. The router: rules first, then the logistic regression
        on the turn's embedding at threshold P(strong) >= {held['threshold']:.3f} (set
        by cross-validation on the training split to send at most 3 % of strong turns
        cheap). Overall accuracy on the held-out split: {total:.1%}."""),
        "## Accuracy per class",
        report.table(["split", "turns", "cheap turns", "cheap -> cheap", "strong turns",
                      "strong -> strong", "strong -> cheap (goal <= 5 %)", "accuracy"], rows),
        "## Who decided (held-out)",
        report.table(["label", "decided by", "turns", "right"], who),
        "## Strong turns sent cheap (held-out)", misses,
        report.para(f"""Cost on the request path: the rules take {held['rules_us']:.0f} µs
        per turn; a turn they leave open is embedded (~{held['embed_ms']:.1f} ms here, one
        turn at a time, off the event loop in the gateway) and scored with one dot
        product. Caveats: the set is small and written by one hand ({held['n']} held-out
        turns); the rules were written with the whole set in view, so their share of the
        figures is less independent than the classifier's."""),
    ])
    return headline, body


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    args = ap.parse_args(argv)
    held, train = measure("test"), measure("train")
    headline, body = render(held, train)
    report.write(args, title="Routing on the latest turn: the complexity router",
                 headline=headline, body=body, libraries=["numpy", "tokenizers"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
