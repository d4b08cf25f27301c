"""The response cache's speed (issue 6): how long a semantic lookup takes at 10k and
100k entries per partition, and what a hit costs end to end next to a miss.

    .venv/bin/python bench/cache.py           # ~2 min -> docs/benchmarks/cache.md
    .venv/bin/python bench/cache.py --quick   # fewer samples -> bench/results/

1. Lookup, in process: embedding the query (all-MiniLM-L6-v2, numpy, one thread),
   searching a partition of N entries, and the verification step; p50/p99 over many
   queries. The search prunes by an exact bound that works on vectors shaped like
   real questions' (cache/index.py), so the partitions hold real MiniLM embeddings of
   the QQP dev questions (bench/cache_precision.py's stored file; repeated with a
   little noise up to N) and the queries are other questions near them, searched at
   the live floor. Without that file: random unit vectors, where the bound prunes
   nothing and the full product runs (the results say which).
2. End to end, through `tollway serve` in front of `tollway simulate`: one client
   sends requests one at a time; latency p50/p99 of a miss (a new question), an exact
   hit, a semantic hit (a reworded question) and no cache at all, with an instant
   upstream (what the cache itself costs) and with a model-like one (first token
   after 300 ms, 20 tokens at 20 ms).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `tollway serve` runs the model

import aiohttp
import numpy as np

import cli
import harness
import report

QUESTION = "How do I reset the password of my account on the mobile app?"
REWORDED = "How can I reset my account password in the mobile app?"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# -- 1. lookup in process --------------------------------------------------------------


def lookup_costs(sizes: list[int], queries: int) -> dict[str, Any]:
    from tollway.cache.embed import default_embedder
    from tollway.cache.index import DIMS, Partition, SemanticEntry
    from tollway.cache.verify import COSINE_FLOOR, DEFAULT_THRESHOLD, accept

    embedder = default_embedder()
    texts = [f"{QUESTION} (variant {i})" for i in range(queries)]
    embed_ms = []
    for t in texts:
        t0 = time.perf_counter()
        embedder.embed([t])
        embed_ms.append((time.perf_counter() - t0) * 1000)
    verify_ms = []
    for t in texts:
        t0 = time.perf_counter()
        accept(t, REWORDED, 0.95, DEFAULT_THRESHOLD)
        verify_ms.append((time.perf_counter() - t0) * 1000)
    real = stored_questions()
    out: dict[str, Any] = {"embed": embed_ms, "verify": verify_ms, "search": {},
                           "vectors": "random" if real is None else "questions"}
    rng = np.random.default_rng(7)
    for n in sizes:
        part = Partition(max_entries=n)
        if real is None:
            vecs = rng.standard_normal((n, DIMS)).astype(np.float32)
        else:
            pick = rng.choice(len(real), n)
            vecs = real[pick] + rng.standard_normal((n, DIMS)).astype(np.float32) * 0.002
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for i in range(n):
            part.add(SemanticEntry(id=str(i), text="", vector=vecs[i].tobytes(),
                                   expires_at=0.0, canon=str(i)))
        if real is None:
            qs = rng.standard_normal((queries, DIMS)).astype(np.float32)
        else:  # a question near an entry (a reworded one), and one near nothing stored
            qs = np.vstack([vecs[rng.choice(n, queries // 2)],
                            real[rng.choice(len(real), queries - queries // 2)]])
            qs += rng.standard_normal(qs.shape).astype(np.float32) * 0.01
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        ms = []
        for q in qs:
            t0 = time.perf_counter()
            part.search(q, COSINE_FLOOR)
            ms.append((time.perf_counter() - t0) * 1000)
        out["search"][n] = ms
        cli.log(f"search at {n:,}: p50 {statistics.median(ms):.2f} ms")
    return out


def stored_questions() -> np.ndarray | None:
    """MiniLM embeddings of the QQP dev questions, if bench/cache_precision.py stored
    them (bench/results/embeddings-*.npy, the largest)."""
    files = sorted(report.RESULTS.glob("embeddings-*.npy"), key=lambda f: f.stat().st_size)
    return np.load(files[-1]).astype(np.float32) if files else None


# -- 2. end to end -----------------------------------------------------------------------


def gateway_config(sim_url: str) -> dict[str, Any]:
    dep = harness.sim_deployment(sim_url)
    return {
        "server": {"access_log": False},
        "prices": {"sim-model": {"input": 1.0, "output": 2.0}},
        "models": {"plain": {"deployments": [dep]},
                   "exact": {"deployments": [dep], "cache": {"enabled": True}},
                   "semantic": {"deployments": [dep], "cache": {"enabled": True,
                                                                "semantic": True}}},
    }


async def timed(http: aiohttp.ClientSession, url: str, model: str, question: str,
                system: str = "You are a support assistant.") -> tuple[float, str]:
    body = {"model": model, "max_tokens": 20, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": question}]}
    t0 = time.perf_counter()
    async with http.post(url, json=body) as r:
        await r.read()
        assert r.status == 200, await r.text()
        return (time.perf_counter() - t0) * 1000, r.headers.get("x-tollway-cache", "-")


async def end_to_end(gw_url: str, n: int) -> dict[str, list[float]]:
    url = gw_url + harness.CHAT
    out: dict[str, list[float]] = {"plain": [], "miss": [], "semantic miss": [], "hit": [],
                                   "semantic hit": []}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # warm: connections, the embedding model's first call
            await timed(http, url, "semantic", f"warm-up {os.urandom(4).hex()}")
        for i in range(n):
            # A system prompt of its own per round: a fresh partition, so the semantic
            # miss is a miss and the reworded question has exactly one candidate.
            system = f"You are support assistant {os.urandom(4).hex()}."
            for name, model, question, want in (
                    ("plain", "plain", QUESTION, "-"),
                    ("miss", "exact", QUESTION, "miss"),
                    ("hit", "exact", QUESTION, "hit"),
                    ("semantic miss", "semantic", QUESTION, "miss"),
                    ("semantic hit", "semantic", REWORDED, "semantic-hit")):
                ms, got = await timed(http, url, model, question, system)
                if got != want:
                    raise RuntimeError(f"{name}: expected x-tollway-cache {want}, got {got}"
                                       f" (request {i})")
                out[name].append(ms)
    return out


def run_end_to_end(work: Path, n: int) -> dict[str, dict[str, list[float]]]:
    with harness.Servers(work) as servers:
        sim, gw = harness.simulator_and_gateway(servers, gateway_config)
        results = {}
        for label, upstream in (
                ("instant upstream", {"ttft_ms": 0, "token_ms": 0, "output_tokens": 20}),
                ("model-like upstream", {"ttft_ms": 300, "token_ms": 20,
                                         "output_tokens": 20})):
            cli.log(f"end to end, {label}")
            harness.sim_config(sim, **upstream)
            runs = n if label.startswith("instant") else max(10, n // 10)
            results[label] = asyncio.run(end_to_end(gw.url, runs))
        return results


# -- report ------------------------------------------------------------------------------


def render(look: dict[str, Any], e2e: dict[str, dict[str, list[float]]]) -> str:
    def p(values: list[float]) -> tuple[str, str]:
        return f"{statistics.median(values):.2f}", f"{pct(values, 0.99):.2f}"

    rows = [("embed the query (all-MiniLM-L6-v2, numpy, 1 thread)", *p(look["embed"])),
            ("verification step", *p(look["verify"]))]
    kind = ("question embeddings, floor 0.8" if look["vectors"] == "questions"
            else "random vectors: no pruning")
    rows += [(f"search a partition of {n:,} entries ({kind})", *p(ms))
             for n, ms in look["search"].items()]
    lookup = report.table(["semantic lookup, in process", "p50 ms", "p99 ms"], rows)
    e2e_tables = []
    for label, res in e2e.items():
        miss_p50 = statistics.median(res["miss"])
        rows = [(name, *p(ms), f"{statistics.median(ms) / miss_p50:.2f}")
                for name, ms in res.items()]
        e2e_tables.append(f"**{label}** ({len(res['miss'])} requests of each kind)\n\n"
                          + report.table(["request", "p50 ms", "p99 ms", "p50 / miss"], rows))
    return "\n\n".join([
        "Semantic lookup in process; end to end through `tollway serve` (one worker, "
        "embedded store) in front of `tollway simulate`, one request at a time from one "
        "aiohttp client. `plain`: an alias without the cache; `miss`: the exact cache, a "
        "new question (lookup, upstream call, write behind); `hit`: the same question "
        "again; `semantic miss`: an alias with the semantic cache, a new question (adds "
        "embedding and search); `semantic hit`: a reworded question (embedding, search, "
        "verification, then the stored answer).",
        lookup, *e2e_tables])


def headline(e2e: dict[str, dict[str, list[float]]]) -> str:
    slow = e2e["model-like upstream"]
    p50 = {k: statistics.median(v) for k, v in slow.items()}
    return (f"in front of a model-like upstream (a {p50['miss'] / 1000:.1f} s miss), an "
            f"exact hit answers in {p50['hit']:.1f} ms and a semantic hit in "
            f"{p50['semantic hit']:.1f} ms p50; the semantic cache adds "
            f"{p50['semantic miss'] - p50['miss']:.0f} ms to a miss.")


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__).parse_args(argv)
    queries = 100 if args.quick else 400
    look = lookup_costs([10_000, 100_000], queries)
    with tempfile.TemporaryDirectory(prefix="tollway-bench-cache-") as work:
        e2e = run_end_to_end(Path(work), 50 if args.quick else 200)
    report.write(args, title="Cache speed", headline=headline(e2e), body=render(look, e2e),
                 libraries=("numpy", "aiohttp"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
