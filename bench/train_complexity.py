"""Train the complexity router's classifier, offline: a logistic regression over the
all-MiniLM-L6-v2 embeddings of the labelled turns' training split
(corpora/complexity_turns.jsonl), written to src/tollway/policy/complexity.json.

The threshold is set from cross-validation by family (a family's phrasings are held
out together): the highest P(strong) below which at most TARGET of the strong training
turns fall, so an unseen strong turn is rarely sent to the cheap tier. Deterministic
(full-batch gradient descent from zeros), so a rerun writes the same file.

    PYTHONPATH=src .venv/bin/python bench/train_complexity.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tollway.cache.embed import default_embedder  # noqa: E402
from tollway.policy.complexity import WEIGHTS, rules  # noqa: E402

CASES = ROOT / "corpora" / "complexity_turns.jsonl"
TARGET = 0.03  # strong training turns allowed below the threshold (cross-validated)
L2 = 1e-3
STEPS = 3000
RATE = 2.0
FOLDS = 5

F32 = npt.NDArray[np.float32]


def load(split: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["split"] == split]


def fit(x: F32, y: F32) -> tuple[F32, float]:
    """Class-balanced, L2-regularised logistic regression by full-batch gradient
    descent (384 weights: numpy is plenty)."""
    w = np.zeros(x.shape[1], np.float64)
    b = 0.0
    pos = max(float(y.sum()), 1.0)
    neg = max(float(len(y) - y.sum()), 1.0)
    sw = np.where(y > 0.5, len(y) / (2 * pos), len(y) / (2 * neg))
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = (p - y) * sw
        w -= RATE * (x.T @ g / len(y) + L2 * w)
        b -= RATE * float(g.mean())
    return w.astype(np.float32), b


def p_strong(x: F32, w: F32, b: float) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ w + b)))  # type: ignore[no-any-return]


def main() -> None:
    # What reaches the classifier: the turns the rules leave open, and every strong turn
    # (few strong turns escape the rules, so all of them teach what "hard" looks like).
    rows = [r for r in load("train")
            if r["label"] == "strong" or rules(str(r["text"]), bool(r["context"])) is None]
    x = default_embedder().embed([str(r["text"]) for r in rows])
    y = np.array([r["label"] == "strong" for r in rows], np.float32)
    families = sorted({str(r["family"]) for r in rows})
    fold_of = {f: i % FOLDS for i, f in enumerate(families)}
    folds = np.array([fold_of[str(r["family"])] for r in rows])
    held = np.zeros(len(rows))
    for k in range(FOLDS):
        test = folds == k
        w, b = fit(x[~test], y[~test])
        held[test] = p_strong(x[test], w, b)
    strong_p = np.sort(held[y > 0.5])
    threshold = float(strong_p[int(np.floor(TARGET * len(strong_p)))])
    w, b = fit(x, y)
    cv_cheap = held < threshold
    WEIGHTS.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "dim": int(x.shape[1]),
        "threshold": round(threshold, 6),
        "bias": round(b, 6),
        "weights": [round(float(v), 6) for v in w],
        "trained_on": f"corpora/complexity_turns.jsonl train split ({len(rows)} turns)",
    }) + "\n")
    print(f"{len(rows)} training turns; threshold {threshold:.4f}; cross-validated: "
          f"strong sent cheap {np.mean(cv_cheap[y > 0.5]):.1%}, "
          f"cheap kept cheap {np.mean(cv_cheap[y < 0.5]):.1%}")


if __name__ == "__main__":
    main()
