"""The in-process vector index of one semantic partition: numpy brute force.

All vectors are L2-normalised, so one matrix-vector product gives every cosine
similarity (100k entries x 384 dims is ~40 MFLOP: a few milliseconds). Entries come
from this process's own answers and from the store's log for the partition (other
replicas', and what survived a restart); ids dedupe the two.

Entries are also kept by their text's canonical form (cache/normalize.py), so a
near-repeat is found by a dict lookup, before and without the model.

At 100k entries the full product reads 150 MB: memory-bound, ~13 ms. So the search
first bounds every cosine from above, exactly, in 64 dimensions: with P the top
principal directions of MiniLM's embeddings (`basis.npy`, orthonormal, written by
bench/cache_basis.py), q.v = (P'q).(P'v) + q_r.v_r and |q_r.v_r| <= |q_r| |v_r|, where
|v_r| = sqrt(1 - |P'v|^2) is kept per entry. Only the entries whose bound reaches the
floor (~0.1-1% of them on real questions) get the full product; the result is the
same as the full search's. When the bound prunes little (random vectors, a low
floor), the full product runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from tollway.cache.normalize import canonical

DIMS = 384


class SemanticEntry(msgspec.Struct, array_like=True):
    id: str  # the exact key under which the answer is stored
    text: str  # the latest user turn it answered
    vector: bytes  # float32[DIMS], L2-normalised
    expires_at: float
    # normalize.canonical(text); "" in entries written before it existed (computed then)
    canon: str = ""


encode_entry = msgspec.msgpack.Encoder().encode
decode_entry = msgspec.msgpack.Decoder(SemanticEntry).decode


@dataclass(slots=True)
class Candidate:
    entry: SemanticEntry
    similarity: float


PRUNE_FROM = 4096  # entries: below this the full product is as fast
MAX_KEPT = 8  # the bound is used when it keeps at most 1/MAX_KEPT of the entries


@functools.cache
def basis() -> np.ndarray | None:
    """(DIMS, B) orthonormal columns: the embeddings' top principal directions."""
    path = Path(__file__).with_name("basis.npy")
    return np.load(path).astype(np.float32) if path.exists() else None


class Partition:
    def __init__(self, max_entries: int) -> None:
        self.max = max_entries
        self._basis = basis()
        b = 0 if self._basis is None else self._basis.shape[1]
        self._vectors = np.empty((16, DIMS), dtype=np.float32)
        self._proj = np.empty((16, b), dtype=np.float32)  # vectors @ basis
        self._resid = np.empty(16, dtype=np.float32)  # |v - basis basis' v|
        self._entries: list[SemanticEntry] = []
        self._ids: set[str] = set()
        self._canon: dict[str, SemanticEntry] = {}  # the latest entry of each form
        self.cursor = ""  # how far the store's log has been read
        self.synced_at = -1.0  # monotonic; < 0: never

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: SemanticEntry) -> None:
        if entry.id in self._ids:
            return
        n = len(self._entries)
        if n >= self.max:  # drop the oldest tenth at once: amortised O(1) per add
            drop = max(1, self.max // 10)
            for old in self._entries[:drop]:
                self._ids.discard(old.id)
                if self._canon.get(old.canon) is old:
                    del self._canon[old.canon]
            del self._entries[:drop]
            self._vectors[: n - drop] = self._vectors[drop:n]
            self._proj[: n - drop] = self._proj[drop:n]
            self._resid[: n - drop] = self._resid[drop:n]
            n -= drop
        if n == len(self._vectors):
            size = min(2 * n, self.max)
            self._vectors = _grown(self._vectors, n, size)
            self._proj = _grown(self._proj, n, size)
            self._resid = _grown(self._resid, n, size)
        v = np.frombuffer(entry.vector, dtype=np.float32)
        self._vectors[n] = v
        if self._basis is not None:
            p = v @ self._basis
            self._proj[n] = p
            self._resid[n] = np.sqrt(max(0.0, 1.0 - float(p @ p)))
        self._entries.append(entry)
        self._ids.add(entry.id)
        if not entry.canon:
            entry.canon = canonical(entry.text)
        self._canon[entry.canon] = entry

    def same_form(self, canon: str) -> SemanticEntry | None:
        """The latest entry whose text has this canonical form."""
        return self._canon.get(canon)

    def search(self, query: np.ndarray, floor: float, k: int = 4) -> list[Candidate]:
        """The `k` most similar entries at or above `floor`, best first."""
        n = len(self._entries)
        if n == 0:
            return []
        rows = self._bounded(query, floor, n)
        if rows is None:
            sims = self._vectors[:n] @ query
            rows = np.arange(n)
        else:
            sims = self._vectors[rows] @ query
        m = len(rows)
        top = np.argpartition(sims, m - k)[m - k:] if m > k else np.arange(m)
        top = top[np.argsort(-sims[top])]
        return [Candidate(self._entries[rows[i]], float(sims[i])) for i in top
                if sims[i] >= floor]

    def _bounded(self, query: np.ndarray, floor: float, n: int) -> np.ndarray | None:
        """The rows whose cosine with `query` may reach `floor` (an exact upper bound,
        see the module's docstring), or None when the bound would not save work."""
        if self._basis is None or n < PRUNE_FROM:
            return None
        qp = query @ self._basis
        bound = self._proj[:n] @ qp
        bound += self._resid[:n] * np.sqrt(max(0.0, float(query @ query - qp @ qp)))
        rows = np.flatnonzero(bound >= floor - 1e-4)  # float rounding
        return rows if len(rows) * MAX_KEPT <= n else None


def _grown(a: np.ndarray, n: int, size: int) -> np.ndarray:
    out = np.empty((size, *a.shape[1:]), dtype=a.dtype)
    out[:n] = a[:n]
    return out
