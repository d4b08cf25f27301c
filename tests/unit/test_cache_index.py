"""The semantic index's search: the bound that prunes it is exact, so a pruned search
returns what the full product would, before and after the oldest entries go."""

from __future__ import annotations

import numpy as np

from tollway.cache.index import DIMS, PRUNE_FROM, Partition, SemanticEntry, basis


def _entry(i: int, v: np.ndarray) -> SemanticEntry:
    return SemanticEntry(id=str(i), text=f"question {i}", vector=v.astype(np.float32).tobytes(),
                         expires_at=0.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _questions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Vectors shaped like embeddings of questions: mostly in the basis's span."""
    b = basis()
    assert b is not None
    return _unit(rng.standard_normal((n, b.shape[1])) @ b.T
                 + 0.3 * rng.standard_normal((n, DIMS)) / np.sqrt(DIMS))


def _reference(vectors: np.ndarray, ids: list[str], q: np.ndarray, floor: float,
               k: int = 4) -> list[str]:
    sims = vectors @ q
    order = np.argsort(-sims)[:k]
    return [ids[i] for i in order if sims[i] >= floor]


def test_pruned_search_equals_the_full_product() -> None:
    rng = np.random.default_rng(3)
    n = 3 * PRUNE_FROM
    vecs = _questions(rng, n)
    part = Partition(max_entries=n)
    for i, v in enumerate(vecs):
        part.add(_entry(i, v))
    ids = [str(i) for i in range(n)]
    pruned = 0
    for j in range(60):
        q = _unit(vecs[j * 7] + 0.05 * rng.standard_normal(DIMS) / np.sqrt(DIMS))  # near an entry
        pruned += part._bounded(q, 0.8, n) is not None
        got = [c.entry.id for c in part.search(q, 0.8)]
        assert got == _reference(vecs, ids, q, 0.8)
        assert got[0] == str(j * 7)
    assert pruned == 60  # the bound did the work


def test_random_vectors_or_a_low_floor_fall_back_to_the_full_product() -> None:
    rng = np.random.default_rng(4)
    n = 2 * PRUNE_FROM
    vecs = _unit(rng.standard_normal((n, DIMS)))
    part = Partition(max_entries=n)
    for i, v in enumerate(vecs):
        part.add(_entry(i, v))
    q = _unit(vecs[5] + 0.1 * rng.standard_normal(DIMS) / np.sqrt(DIMS))
    assert part._bounded(q, 0.5, n) is None
    assert [c.entry.id for c in part.search(q, 0.5)] == _reference(
        vecs, [str(i) for i in range(n)], q, 0.5)


def test_the_bound_follows_the_entries_when_the_oldest_go() -> None:
    rng = np.random.default_rng(5)
    cap = PRUNE_FROM + 1000
    vecs = _questions(rng, cap + 800)
    part = Partition(max_entries=cap)
    for i, v in enumerate(vecs):
        part.add(_entry(i, v))
    kept = [int(e.id) for e in part._entries]
    assert kept[0] > 0 and kept[-1] == len(vecs) - 1
    for j in kept[-50:]:
        q = _unit(vecs[j] + 0.05 * rng.standard_normal(DIMS) / np.sqrt(DIMS))
        assert [c.entry.id for c in part.search(q, 0.8)] == _reference(
            vecs[kept], [str(i) for i in kept], q, 0.8)
