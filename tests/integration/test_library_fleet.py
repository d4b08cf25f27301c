"""A script's in-process gateway on a fleet's shared store (Redis + PostgreSQL, the
machine's real ones): its spend counts against the same budgets as a server's, and its
rows are in the same ledger."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as aioredis

import tollway
from tests.conftest import gateway_config
from tests.helpers.admin import ledger_rows
from tests.helpers.gateway import start_gateway
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(8).hex()
REDIS_DB = "redis://127.0.0.1:6379/12"  # a database of its own, flushed around the test
OUT = 16  # answers and max_tokens alike: a request holds exactly what it costs
ADMITTED = 6
MESSAGES: Any = [{"role": "user", "content": "Shared budget, please."}]


async def _flush() -> None:
    r = aioredis.from_url(REDIS_DB)
    await r.flushdb()
    await r.aclose()


@pytest.fixture(scope="module")
def shared_config(sim: SimHandle) -> Iterator[dict[str, Any]]:
    per = count_request(parse_chat_request(orjson.dumps(
        {"model": "sim", "messages": MESSAGES})), "sim-model") + OUT
    asyncio.run(_flush())
    with scratch_database("tollway_library") as name:
        cfg = gateway_config(sim.url)
        cfg["store"] = {"redis_url": REDIS_DB, "postgres_url": url_of(name)}
        cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
        cfg["budgets"] = {"users": {"shared": [{"tokens": ADMITTED * per, "period": "day"}]}}
        try:
            yield cfg
        finally:
            asyncio.run(_flush())


def test_a_scripts_spend_counts_against_the_fleets_budget(
        shared_config: dict[str, Any], fresh_sim: SimHandle) -> None:
    fresh_sim.config(output_tokens=OUT)
    server = start_gateway(shared_config, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        with tollway.Gateway.open(shared_config, env={"TOLLWAY_MASTER_KEY": MASTER}) as gw:
            over_http = openai.OpenAI(base_url=server.base_url, api_key=MASTER, max_retries=0,
                                      default_headers={"x-tollway-user": "shared"})
            in_process = gw.openai()
            statuses = []
            with gw.attribute(user="shared"):
                for i in range(ADMITTED + 4):  # the two take turns
                    client = (over_http, in_process)[i % 2]
                    try:
                        client.chat.completions.create(model="sim", messages=MESSAGES,
                                                       max_tokens=OUT)
                        statuses.append(200)
                    except openai.RateLimitError:
                        statuses.append(429)
            over_http.close()
            with gw.http() as http:  # the script's buffered rows, written now
                http.get("/admin/ledger")
        assert statuses == [200] * ADMITTED + [429] * 4
        assert fresh_sim.stats()["requests"] == ADMITTED
        rows = [r for r in ledger_rows(server.url, MASTER) if r["user"] == "shared"]
        assert sorted(r["status"] for r in rows) == sorted(statuses)  # both processes'
    finally:
        server.stop()
