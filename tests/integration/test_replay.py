"""`tollway replay`: a trace replayed under two policies, each against its own simulator
and gateway; the report and the per-turn JSON say what each cost and what answered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NAIVE = """
models:
  gpt-4o:
    deployments:
      - {provider: openai, model: gpt-4o, api_key: "${OPENAI_API_KEY}",
         api_base: "${OPENAI_BASE_URL}"}
"""
CACHED = NAIVE + """
cache: {enabled: true, scope: global}
"""


def conversation(cid: str, texts: list[str], abort_first_after: int | None = None) -> str:
    turns = [{"kind": "faq", "text": t, "meaning": t, "needs": "cheap",
              "abort_after": abort_first_after if i == 0 else None}
             for i, t in enumerate(texts)]
    return json.dumps({"id": cid, "user": "u1", "feature": "support", "system": "Be brief.",
                       "turns": turns}) + "\n"


def test_two_policies_priced_side_by_side(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    # The same one-turn question in three conversations: the cache answers two.
    trace.write_text("".join(conversation(f"c{i}", ["How do I reset my password?"])
                             for i in range(3))
                     + conversation("c3", ["Tell me a story.", "thanks!"], abort_first_after=2))
    (tmp_path / "naive.yaml").write_text(NAIVE)
    (tmp_path / "cached.yaml").write_text(CACHED)
    out = tmp_path / "turns.json"
    done = subprocess.run(
        [sys.executable, "-m", "tollway.cli", "replay", str(trace), "--config",
         str(tmp_path / "naive.yaml"), "--config", str(tmp_path / "cached.yaml"),
         "--concurrency", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=True)
    report = done.stdout
    assert "naive.yaml" in report and "cached.yaml" in report
    runs = json.loads(out.read_text())
    assert [len(r["turns"]) for r in runs] == [5, 5]
    naive, cached = runs
    assert all(t["status"] == 200 and t["model"] == "gpt-4o" for t in naive["turns"])
    assert [t["cache"] for t in cached["turns"]][:3] == ["miss", "hit", "hit"]
    assert naive["wrong_hits"] == cached["wrong_hits"] == 0
    assert [t["aborted"] for t in naive["turns"]] == [False, False, False, True, False]
    # The cache's two hits cost nothing: the cached policy's ledger is lower.
    assert 0 < cached["ledger_usd"] < naive["ledger_usd"]
