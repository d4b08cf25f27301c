"""The embeddings of recently asked texts, kept so the same FAQ asked again is not
embedded again; the rest computed in one batch on the cache's embedding thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

EMBEDDINGS_KEPT = 4096  # recent texts' embeddings (1.5 kB each), least recently used out


class RecentEmbeddings:
    def __init__(self, kept: int = EMBEDDINGS_KEPT) -> None:
        self._kept = kept
        self._vectors: dict[str, np.ndarray] = {}  # the most recently used last

    async def embed(self, executor: ThreadPoolExecutor, texts: list[str]) -> list[np.ndarray]:
        """The texts' embeddings, those not kept computed in one batch on `executor`."""
        from tollway.cache.embed import default_embedder

        found = {t: v for t in texts if (v := self._vectors.pop(t, None)) is not None}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            def run() -> np.ndarray:
                out: np.ndarray = default_embedder().embed(missing)
                return out

            got = await asyncio.get_running_loop().run_in_executor(executor, run)
            found.update(zip(missing, got, strict=True))
        for t, v in found.items():
            self._vectors[t] = v
        while len(self._vectors) > self._kept:
            del self._vectors[next(iter(self._vectors))]
        return [found[t] for t in texts]
