"""The semantic index's pruning basis: the top principal directions of MiniLM's
embeddings of real questions (src/tollway/cache/basis.npy, read by cache/index.py).

    .venv/bin/python bench/cache_basis.py   # ~10 s with stored embeddings, else ~10 min

The basis only makes the search faster: the bound it gives is exact for any
orthonormal basis, so a poor one prunes less and changes no result. Fitted on the
distinct texts of the QQP dev pairs (their embeddings reused from
bench/cache_precision.py's stored file when present); uncentred, so the mean
direction is in it.
"""

from __future__ import annotations

import sys

import numpy as np

import cache_precision as cp
from harness import ROOT
from tollway.cache import evaluate
from tollway.cache.embed import default_embedder

DIMS = 64
OUT = ROOT / "src" / "tollway" / "cache" / "basis.npy"


def main() -> int:
    pairs = evaluate.load_pairs(cp.QQP)
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    emb = cp.ReusedEmbedder(default_embedder(), True).embed_all(texts).astype(np.float64)
    _, s, vt = np.linalg.svd(emb, full_matrices=False)
    basis = np.ascontiguousarray(vt[:DIMS].T.astype(np.float32))  # (384, DIMS)
    np.save(OUT, basis)
    kept = float((s[:DIMS] ** 2).sum() / (s ** 2).sum())
    print(f"wrote {OUT.relative_to(ROOT)}: {DIMS} directions, {kept:.1%} of the energy "
          f"of {len(texts):,} question embeddings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
