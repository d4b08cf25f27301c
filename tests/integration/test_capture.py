"""Captured traffic: conversations an app sends through the gateway (OpenAI's Chat
Completions and Responses, Anthropic's Messages; with and without the conversation
header; one stream the client abandons) are written as a trace — grouped right,
personal data redacted, the abort marked — and `tollway replay` replays that file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic

from tests.conftest import gateway_config
from tests.helpers.clients import openai_client, track
from tests.helpers.gateway import start_gateway
from tests.helpers.sim import SimHandle
from tollway.wire import trace

SYSTEM = "You are a helpful support agent."
EMAIL = "jane.doe@example.com"
NAIVE = """
models:
  gpt-4o:
    deployments:
      - {provider: openai, model: gpt-4o, api_key: "${OPENAI_API_KEY}",
         api_base: "${OPENAI_BASE_URL}"}
"""


async def chat_whole(client: Any, turns: list[str], headers: dict[str, str]) -> None:
    """An app resending the whole conversation each turn, as chat apps do."""
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    for text in turns:
        messages.append({"role": "user", "content": text})
        r = await client.chat.completions.create(model="sim", messages=messages,
                                                 extra_headers=headers)
        messages.append({"role": "assistant", "content": r.choices[0].message.content})


async def test_captured_conversations_replay(fresh_sim: SimHandle, tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    cfg = gateway_config(fresh_sim.url)
    cfg["capture"] = {"path": str(path)}
    gw = start_gateway(cfg)
    try:
        oa = openai_client(gw.base_url, "x")
        await chat_whole(oa, ["Hi, my order is late.", f"Write to me at {EMAIL} please.",
                              "Thanks!"], {"x-tollway-user": "alice",
                                           "x-tollway-feature": "support"})
        await chat_whole(oa, ["What are your opening hours?", "And on Sunday?"],
                         {"x-tollway-conversation-id": "order-42"})
        claude = track(anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0))
        history: list[Any] = []
        for text in ["Bonjour", "Parlez-vous anglais ?"]:
            history.append({"role": "user", "content": text})
            m = await claude.messages.create(model="sim", max_tokens=32, system=SYSTEM,
                                             messages=history)
            history.append({"role": "assistant", "content": m.content[0].text})  # type: ignore[union-attr]
        first = await oa.responses.create(model="sim", input="Ciao", instructions=SYSTEM)
        await oa.responses.create(model="sim", input="Come stai?", instructions=SYSTEM,
                                  previous_response_id=first.id)
        # A stream the user closes after a few chunks.
        fresh_sim.config(token_ms=20, output_tokens=200)
        stream = await oa.chat.completions.create(
            model="sim", stream=True, max_tokens=100,
            messages=[{"role": "user", "content": "Tell me a long story."}])
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()
    finally:
        gw.stop()  # a clean shutdown writes what is buffered
    written = path.read_text()
    assert EMAIL not in written and "[EMAIL_1]" in written
    convs = trace.read(path.read_bytes())
    by_first = {c.turns[0].text: c for c in convs}
    assert len(convs) == 5, [[t.text for t in c.turns] for c in convs]

    alice = by_first["Hi, my order is late."]
    assert [t.text for t in alice.turns] == [
        "Hi, my order is late.", "Write to me at [EMAIL_1] please.", "Thanks!"]
    assert alice.system == SYSTEM and alice.feature == "support"
    assert alice.user is not None and "alice" not in alice.user
    assert all((t.kind, t.needs, t.abort_after) == ("captured", "unknown", None)
               for t in alice.turns)
    assert len({t.meaning for t in alice.turns}) == 3

    headed = by_first["What are your opening hours?"]
    assert [t.text for t in headed.turns][1:] == ["And on Sunday?"]
    assert "order-42" not in headed.id

    french = by_first["Bonjour"]
    assert [t.text for t in french.turns] == ["Bonjour", "Parlez-vous anglais ?"]
    assert french.system == SYSTEM

    italian = by_first["Ciao"]  # the Responses API, continued by previous_response_id
    assert [t.text for t in italian.turns] == ["Ciao", "Come stai?"]

    story = by_first["Tell me a long story."]
    [aborted] = story.turns
    assert aborted.abort_after is not None and 1 <= aborted.abort_after < 100

    # The capture is a trace `tollway replay` runs.
    (tmp_path / "naive.yaml").write_text(NAIVE)
    out = tmp_path / "turns.json"
    await asyncio.to_thread(  # a subprocess: it starts its own simulator and gateway
        subprocess.run, [sys.executable, "-m", "tollway.cli", "replay", str(path), "--config",
                         str(tmp_path / "naive.yaml"), "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=True)
    [run] = json.loads(out.read_text())
    assert len(run["turns"]) == 10
    assert all(t["status"] == 200 for t in run["turns"])
    assert sum(t["aborted"] for t in run["turns"]) == 1
