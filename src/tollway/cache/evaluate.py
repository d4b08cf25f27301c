"""`tollway cache eval PAIRS.jsonl`: how the semantic cache would do on labelled pairs.

Each line is `{"a": str, "b": str, "same": bool}`. A pair is a *hit* when the cache
would serve a's answer to b (`verify.accept`): a near-repeat (one canonical form,
nothing `verify` tells apart), or neither text temporal, `verify` passes and the
match score reaches the threshold. precision = hits labelled same / hits, recall =
hits labelled same / pairs labelled same, hit rate = hits / pairs. `--show-wrong` /
`--show-misses` list the pairs served though labelled different, and those labelled
same that were not served, with why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tollway.cache import verify
from tollway.cache.embed import Embedder, default_embedder

SWEEP = tuple(round(0.05 * i, 2) for i in range(6, 20))  # 0.30 ... 0.95


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    same: bool


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    precision: float
    recall: float
    hit_rate: float
    hits: int


@dataclass(frozen=True, slots=True)
class Scored:
    """Per pair: the cosine, the match score, whether anything vetoes it (temporal or a
    verify reason), and the label."""

    cosine: npt.NDArray[np.float32]
    score: npt.NDArray[np.float64]
    vetoed: npt.NDArray[np.bool_]
    same: npt.NDArray[np.bool_]
    reasons: list[str | None]
    near: npt.NDArray[np.bool_]  # near-repeats (verify.near_repeat): served regardless

    def hits(self, threshold: float) -> npt.NDArray[np.bool_]:
        """Which pairs the cache would serve at this match-score threshold."""
        return self.near | (~self.vetoed & (self.score >= threshold) & (
            self.cosine >= verify.COSINE_FLOOR))

    def point(self, threshold: float, *, cosine_only: bool = False) -> Point:
        hit = self.cosine >= threshold if cosine_only else self.hits(threshold)
        return _point(threshold, hit, self.same)


@dataclass(frozen=True, slots=True)
class Result:
    pairs: int
    same: int
    threshold: float
    precision: float
    recall: float
    hit_rate: float
    sweep: list[Point]
    wrong: list[Shown] | None = None  # with show_wrong: the pairs served wrongly
    misses: list[Shown] | None = None  # with show_misses: the same pairs not served

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Shown:
    """One pair a threshold gets wrong, and why the decision went that way."""

    a: str
    b: str
    cosine: float
    score: float
    why: str  # "near-repeat", "score", a verify reason, "temporal", "cosine"


def _point(threshold: float, hit: npt.NDArray[np.bool_], same: npt.NDArray[np.bool_]) -> Point:
    hits = int(hit.sum())
    good = int((hit & same).sum())
    n_same = int(same.sum())
    return Point(threshold=threshold, precision=good / hits if hits else 1.0,
                 recall=good / n_same if n_same else 0.0,
                 hit_rate=hits / len(same) if len(same) else 0.0, hits=hits)


def load_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    """Read a pairs file; a malformed line raises ValueError naming it."""
    pairs: list[Pair] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                pairs.append(Pair(str(d["a"]), str(d["b"]), bool(d["same"])))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected {{\"a\", \"b\", \"same\"}}: {e}") from e
            if limit is not None and len(pairs) >= limit:
                break
    return pairs


EMBED_CHUNK = 128  # texts embedded per call: the progress reported between them


def cosines(pairs: list[Pair], embedder: Embedder,
            progress: Callable[[int], object] | None = None) -> npt.NDArray[np.float32]:
    """Cosine similarity of each pair; every distinct text is embedded once (in chunks,
    `progress` told how many texts each chunk held)."""
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    index = {t: i for i, t in enumerate(texts)}
    chunks = []
    for i in range(0, len(texts), EMBED_CHUNK):
        chunks.append(embedder.embed(texts[i:i + EMBED_CHUNK]))
        if progress is not None:
            progress(len(chunks[-1]))
    emb = np.concatenate(chunks) if chunks else np.empty((0, 0), np.float32)
    ia = np.fromiter((index[p.a] for p in pairs), np.int64, len(pairs))
    ib = np.fromiter((index[p.b] for p in pairs), np.int64, len(pairs))
    return np.einsum("ij,ij->i", emb[ia], emb[ib])  # type: ignore[no-any-return]


def distinct_texts(pairs: list[Pair]) -> int:
    return len({t for p in pairs for t in (p.a, p.b)})


def score(pairs: list[Pair], embedder: Embedder | None = None,
          progress: Callable[[int], object] | None = None) -> Scored:
    cos = cosines(pairs, embedder or default_embedder(), progress)
    reasons: list[str | None] = []
    scores = np.empty(len(pairs))
    for i, (p, c) in enumerate(zip(pairs, cos, strict=True)):
        temporal = verify.is_temporal(p.a) or verify.is_temporal(p.b)
        reasons.append("temporal" if temporal else verify.verify(p.a, p.b))
        scores[i] = verify.match_score(p.a, p.b, float(c))
    vetoed = np.array([r is not None for r in reasons], bool)
    same = np.array([p.same for p in pairs], bool)
    near = np.array([verify.near_repeat(p.a, p.b) for p in pairs], bool)
    return Scored(cos, scores, vetoed, same, reasons, near)


def _why(s: Scored, i: int, hit: bool) -> str:
    if hit:
        return "near-repeat" if s.near[i] else "score"
    if s.reasons[i] is not None:
        return str(s.reasons[i])
    return "cosine" if s.cosine[i] < verify.COSINE_FLOOR else "score"


def shown(pairs: list[Pair], s: Scored, threshold: float, *, wrong: bool) -> list[Shown]:
    """The pairs served though labelled different (wrong) or labelled same and not
    served (misses), best-scored first."""
    hit = s.hits(threshold)
    pick = hit & ~s.same if wrong else ~hit & s.same
    idx = sorted(np.flatnonzero(pick), key=lambda i: -float(s.score[i]))
    return [Shown(pairs[i].a, pairs[i].b, round(float(s.cosine[i]), 4),
                  round(float(s.score[i]), 4), _why(s, int(i), bool(hit[i]))) for i in idx]


def evaluate(pairs: list[Pair], threshold: float = verify.DEFAULT_THRESHOLD,
             embedder: Embedder | None = None, *, show_wrong: bool = False,
             show_misses: bool = False,
             progress: Callable[[int], object] | None = None) -> Result:
    s = score(pairs, embedder, progress)
    at = s.point(threshold)
    return Result(pairs=len(pairs), same=int(s.same.sum()), threshold=threshold,
                  precision=at.precision, recall=at.recall, hit_rate=at.hit_rate,
                  sweep=[s.point(t) for t in sorted({*SWEEP, threshold})],
                  wrong=shown(pairs, s, threshold, wrong=True) if show_wrong else None,
                  misses=shown(pairs, s, threshold, wrong=False) if show_misses else None)


def render(r: Result) -> str:
    lines = [f"{r.pairs} pairs, {r.same} labelled same; threshold {r.threshold:.2f}: "
             f"precision {r.precision:.1%}  recall {r.recall:.1%}  hit rate {r.hit_rate:.1%}",
             "", "threshold  precision  recall  hit rate    hits"]
    for p in r.sweep:
        mark = "  <- threshold" if p.threshold == r.threshold else ""
        lines.append(f"     {p.threshold:.2f}     {p.precision:6.1%}  {p.recall:6.1%}    "
                     f"{p.hit_rate:6.1%}  {p.hits:6d}{mark}")
    for title, rows in ((f"served wrongly at {r.threshold:.2f}", r.wrong),
                        (f"missed at {r.threshold:.2f}", r.misses)):
        if rows is None:
            continue
        lines += ["", f"{title}: {len(rows)} pairs (cosine, score, why)"]
        lines += [f"  {x.cosine:.3f} {x.score:.2f} {x.why:<11} {x.a!r} / {x.b!r}"
                  for x in rows]
    return "\n".join(lines)
