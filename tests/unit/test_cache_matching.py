"""The semantic cache's matching: the numpy MiniLM against sentence-transformers' own
output, the temporal bypass, verify's reasons, the trap set (acceptance: ≤ 1% wrong
hits, ≥ 60% of true paraphrases hit), a QQP sample, and `tollway cache eval`."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tollway.cache import evaluate, tokens, verify
from tollway.cache.embed import default_embedder

DATA = Path(__file__).resolve().parent.parent / "data"
# The first 600 of the 24,000 QQP dev pairs (../shared/data/qqp_pairs_dev.jsonl, which
# bench/cache_precision.py evaluates whole): kept in the repository so a clone anywhere
# runs this test.
QQP = Path(__file__).resolve().parents[1] / "data" / "qqp_sample.jsonl"


def test_embeddings_match_sentence_transformers() -> None:
    ref = json.loads((DATA / "minilm_reference.json").read_text())
    texts = [item["text"] for item in ref["items"]]
    want = np.array([item["embedding"] for item in ref["items"]], np.float32)
    emb = default_embedder()
    assert [len(ids) for ids in emb.token_ids(texts)] == [i["tokens"] for i in ref["items"]]
    for got in (emb.embed(texts), np.vstack([emb.embed([t]) for t in texts])):
        assert got.shape == (len(texts), 384) and got.dtype == np.float32
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (got * want).sum(1).min() > 0.9999
        assert np.abs(got - want).max() < 1e-4
    assert emb.embed([]).shape == (0, 384)


def test_temporal_questions_bypass() -> None:
    for text in ["What's the weather today?", "latest iPhone price", "current mortgage rates",
                 "flights from Paris to Rome on May 3", "news from 2024-05-03",
                 "what happened this week in tech", "Is the shop open right now?",
                 "train on 12 March to Prague"]:
        assert verify.is_temporal(text), text
    for text in ["How do I sort a list in Python?", "What is the capital of Austria?",
                 "Who won the World Cup in 2014?", "May I return a sale item?",
                 "best time to visit Japan in April"]:
        assert not verify.is_temporal(text), text


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("cancel my subscription", "don't cancel my subscription", "negation"),
    ("How do I enable dark mode?", "How do I disable dark mode?", "opposite"),
    ("How do I convert 5 km to miles", "How do I convert 8 km to miles", "number"),
    ("How many calories are in two eggs?", "How many calories are in 3 eggs?", "number"),
    ("Who won the World Cup in 2014?", "Who won the World Cup in 2018?", "date"),
    ("Is the office open on Saturday?", "Is the office open on Sunday?", "date"),
    ("How do I sort a list in Python?", "How do I sort a list in JavaScript?", "sibling"),
    ("How do I sort a list in Python?", "How do I sort a list in Elm?", "entity"),
    ("How do I sort a list in Python?", "What's the way to sort a list in python", None),
    ("How many calories are in 2 eggs?", "Calories in two eggs?", None),
])
def test_verify_reasons(a: str, b: str, reason: str | None) -> None:
    assert verify.verify(a, b) == reason
    assert verify.verify(b, a) == reason


@pytest.mark.parametrize("forms", [
    # "apply" lost "ly" ("app"), so it never met "applies" (-> "apply") or "applied"
    ("apply", "applies", "applied", "applying"),
    ("use", "uses", "used", "using"),  # "using" was left whole (a length condition)
    ("modify", "modifies", "modified", "modifying"),  # "modified" -> "modifi"
    ("study", "studies", "studied", "studying"),
    ("movie", "movies"), ("city", "cities"), ("family", "families"),
    ("meaning", "meanings"), ("building", "buildings"),  # a plural of an -ing noun
    ("agree", "agreed", "agrees"), ("die", "died", "dies", "dying"),
    ("travel", "travelled", "travelling"), ("cancel", "cancelled", "cancels"),
    ("control", "controlled", "controlling"), ("run", "running", "runs"),
    ("speed", "speeds", "speeding"), ("string", "strings"),
    ("possible", "possibly"), ("easy", "easily"), ("quick", "quickly"),
    ("invoice", "invoices"), ("take", "taking"), ("require", "required"),
    ("close", "closed", "closing"), ("box", "boxes"), ("program", "programming"),
])
def test_stem_joins_the_forms_of_a_word(forms: tuple[str, ...]) -> None:
    assert len({verify._stem(w) for w in forms}) == 1, {w: verify._stem(w) for w in forms}


@pytest.mark.parametrize(("a", "b"), [
    # The old "-ly" and "-ing" rules made these one stem: apply/app, reply/reps,
    # supply/sups, early/ear, string/str.
    ("apply", "app"), ("reply", "reps"), ("supply", "sups"), ("early", "ear"),
    ("string", "str"), ("apply", "apple"), ("multiply", "multiple"), ("thing", "the"),
    # "-ed" goes only with a vowel before it, "-eed" only after one: not bed, seed, feed
    ("bed", "be"), ("seed", "see"), ("feed", "fee"), ("speed", "spee"),
])
def test_stem_keeps_different_words_apart(a: str, b: str) -> None:
    assert verify._stem(a) != verify._stem(b)


def test_stem_fixes_reach_the_match() -> None:
    # Both questions have "apply"/"applies", "use"/"using": no word is one-sided.
    a = verify.parse("What fees apply when I use a card?")
    b = verify.parse("Which fees applies using a card?")
    assert a.content == b.content


def test_token_alignment_finds_the_word_without_a_match() -> None:
    def align(a: str, b: str) -> dict[str, float]:
        f = tokens.alignment(a, b, verify._STOP, verify.rarity)
        return dict(zip(verify.FEATURES[-14:], f, strict=True))

    same = align("How do I learn Python?", "how do i learn python")
    assert same["tokens: alignment F1"] == pytest.approx(1.0, abs=1e-5)
    assert same["tokens: share matched under 0.8"] == 0.0
    # one word swapped for an unrelated one: that token is left without a close match
    swapped = align("How do I learn Python?", "How do I learn guitar?")
    assert swapped["content tokens: worst token match"] < 0.7
    assert swapped["content tokens: share matched under 0.7"] > 0.0
    assert swapped["tokens: alignment F1"] < same["tokens: alignment F1"]
    # nothing alphanumeric on a side: neutral, fully matched
    assert align("?!", "How do I learn Python?")["tokens: alignment F1"] == 1.0


def test_accept_needs_similarity_score_and_verification() -> None:
    a, b = "How do I sort a list in Python?", "What's the way to sort a list in Python?"
    ea, eb = default_embedder().embed([a, b])
    sim = float(ea @ eb)
    assert verify.accept(a, b, sim)
    assert not verify.accept(a, b, verify.COSINE_FLOOR - 0.01)
    assert not verify.accept(a, "How do I sort a list in JavaScript?", 0.99)
    assert not verify.accept("weather in Rome today", "weather in Rome today?", 1.0)


@functools.cache
def _traps() -> tuple[list[dict[str, object]], np.ndarray]:
    rows = [json.loads(line) for line in (DATA / "cache_traps.jsonl").read_text().splitlines()]
    scored = evaluate.score([evaluate.Pair(r["a"], r["b"], r["same"]) for r in rows])
    hit = ~scored.vetoed & (scored.score >= verify.DEFAULT_THRESHOLD) & (
        scored.cosine >= verify.COSINE_FLOOR)
    return rows, hit


def test_trap_set_wrong_hits() -> None:
    rows, hit = _traps()
    kinds = Counter(r["kind"] for r in rows)
    assert len(rows) >= 300 and sum(v for k, v in kinds.items() if k != "paraphrase") >= 160
    assert set(kinds) == {"negation", "number", "date", "entity", "scope", "paraphrase"}
    wrong = [(r["kind"], r["a"], r["b"]) for r, h in zip(rows, hit, strict=True)
             if h and not r["same"]]
    assert len(wrong) <= 0.01 * sum(not r["same"] for r in rows), wrong
    paraphrases = np.array([bool(r["same"]) for r in rows])
    # A regression set now (issue 24's trap set is the measure, below): its paraphrases
    # alone reach 49% at the strict threshold (docs/benchmarks/cache_precision.md).
    assert hit[paraphrases].mean() >= 0.45


def _trapset(half: str) -> list[dict[str, object]]:
    path = DATA / f"cache_trapset_{half}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("half", ["tune", "holdout"])
def test_trapset_near_repeats_need_no_model(half: str) -> None:
    rows = _trapset(half)
    kinds = Counter(str(r["kind"]) for r in rows)
    assert len(kinds) >= 10 and kinds["near-repeat"] >= 200
    # Near-repeats (case, punctuation, whitespace, contractions, filler) are all found by
    # their canonical form; no trap shares one with its anchor.
    for r in rows:
        near = verify.near_repeat(str(r["a"]), str(r["b"]))
        assert near == (r["kind"] == "near-repeat"), r


def test_trapset_measuring_half() -> None:
    # Acceptance on the half no rule was tuned on: <= 1% of traps served, >= 60% of
    # paraphrases and near-repeats served, at the default (strict) threshold.
    rows = _trapset("holdout")
    s = evaluate.score([evaluate.Pair(str(r["a"]), str(r["b"]), bool(r["same"]))
                        for r in rows])
    hit = s.hits(verify.DEFAULT_THRESHOLD)
    same = s.same
    wrong = [(r["kind"], r["a"], r["b"]) for r, h in zip(rows, hit, strict=True)
             if h and not r["same"]]
    assert len(wrong) <= 0.01 * (~same).sum(), wrong
    assert hit[same].mean() >= 0.60
    assert len(rows) + len(_trapset("tune")) >= 1000


def test_qqp_sample_precision() -> None:
    # The first 600 dev pairs (~10 s to embed); the whole set is bench/cache_precision.py's.
    r = evaluate.evaluate(evaluate.load_pairs(QQP, limit=600))
    assert r.precision >= 0.88 and r.recall >= 0.15, r


def test_cache_eval_cli_json(tmp_path: Path) -> None:
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(p) for p in [
        {"a": "How do I sort a list in Python?", "b": "How can I sort a list in Python?",
         "same": True},
        {"a": "What is the capital of Austria?", "b": "What is the capital of Australia?",
         "same": False},
        {"a": "How do I reset my password?", "b": "How do I bake bread?", "same": False},
    ]) + "\n")
    out = subprocess.run([sys.executable, "-m", "tollway.cli", "cache", "eval", str(f),
                          "--json"], capture_output=True, text=True, check=True, timeout=120)
    r = json.loads(out.stdout)
    assert "embedding" in out.stderr and "6/6" in out.stderr  # the progress bar, on stderr
    assert {"precision", "recall", "hit_rate", "threshold", "sweep"} <= set(r)
    assert r["threshold"] == verify.DEFAULT_THRESHOLD
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["hit_rate"] == pytest.approx(1 / 3)
    assert {"threshold", "precision", "recall", "hit_rate"} <= set(r["sweep"][0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x"}\n')
    err = subprocess.run([sys.executable, "-m", "tollway.cli", "cache", "eval", str(bad)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert err.returncode == 1 and "bad.jsonl:1" in err.stderr


def test_cache_eval_shows_what_a_threshold_gets_wrong(tmp_path: Path) -> None:
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(p) for p in [
        {"a": "How do I sort a list in Python?", "b": "how do I sort a list in python",
         "same": True},  # a near-repeat: served
        {"a": "How do I bake bread?", "b": "what is the best way to learn the violin",
         "same": True},
        {"a": "How do I reset my password?", "b": "How do I reset my password please",
         "same": False},  # mislabelled on purpose: served, so "wrong"
    ]) + "\n")
    run = [sys.executable, "-m", "tollway.cli", "cache", "eval", str(f)]
    out = subprocess.run([*run, "--json", "--show-wrong", "--show-misses"],
                         capture_output=True, text=True, check=True, timeout=120)
    r = json.loads(out.stdout)
    assert [(w["b"], w["why"]) for w in r["wrong"]] == [
        ("How do I reset my password please", "near-repeat")]
    assert [(m["b"], m["why"]) for m in r["misses"]] == [
        ("what is the best way to learn the violin", "cosine")]
    text = subprocess.run([*run, "--show-misses", "--mode", "balanced"], capture_output=True,
                          text=True, check=True, timeout=120).stdout
    assert "missed at" in text and "learn the violin" in text
    assert "served wrongly" not in text
    plain = subprocess.run(run, capture_output=True, text=True, check=True, timeout=120).stdout
    assert "missed at" not in plain and "served wrongly" not in plain


def test_modes_thresholds() -> None:
    assert verify.threshold_of("strict") == verify.DEFAULT_THRESHOLD
    assert verify.threshold_of("balanced") < verify.DEFAULT_THRESHOLD
    assert verify.threshold_of("balanced", 0.5) == 0.5


def test_the_mode_is_configured_globally_or_per_alias() -> None:
    import msgspec

    from tollway.cache.controls import for_alias
    from tollway.config.cache import CacheConfig, ModelCacheConfig, SemanticCacheConfig

    on = CacheConfig(enabled=True, semantic=SemanticCacheConfig(enabled=True))
    assert for_alias(on, None).mode == "strict"
    balanced = CacheConfig(enabled=True, semantic=SemanticCacheConfig(enabled=True,
                                                                      mode="balanced"))
    assert for_alias(balanced, None).mode == "balanced"
    assert for_alias(balanced, ModelCacheConfig(mode="strict")).mode == "strict"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"mode": "loose"}, SemanticCacheConfig)
