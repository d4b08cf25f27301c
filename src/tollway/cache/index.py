"""The in-process vector index of one semantic partition: numpy brute force.

All vectors are L2-normalised, so one matrix-vector product gives every cosine
similarity (100k entries x 384 dims is ~40 MFLOP: a few milliseconds). Entries come
from this process's own answers and from the store's log for the partition (other
replicas', and what survived a restart); ids dedupe the two.

Entries are also kept by their text's canonical form (cache/normalize.py), so a
near-repeat is found by a dict lookup, before and without the model.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class Partition:
    def __init__(self, max_entries: int) -> None:
        self.max = max_entries
        self._vectors = np.empty((16, DIMS), dtype=np.float32)
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
            n -= drop
        if n == len(self._vectors):
            grown = np.empty((min(2 * n, self.max), DIMS), dtype=np.float32)
            grown[:n] = self._vectors[:n]
            self._vectors = grown
        self._vectors[n] = np.frombuffer(entry.vector, dtype=np.float32)
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
        sims = self._vectors[:n] @ query
        top = np.argpartition(sims, n - k)[n - k:] if n > k else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [Candidate(self._entries[i], float(sims[i])) for i in top if sims[i] >= floor]
