"""Fixtures for a module of tests against one simulator of its own, with the official
SDKs. Bind them in the test module (an import would be shadowed by the test's
parameters, which linters flag):

    sim_server, sim = sim_fixtures.sim_server, sim_fixtures.sim

`sim` is the module's simulator with zeroed stats (and no batches or files), its
start-up config restored after each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.helpers.sim import SimHandle, start_simulator


@pytest.fixture(scope="module")
def sim_server() -> Iterator[SimHandle]:
    with start_simulator(seed=1) as sim:
        yield sim


@pytest.fixture
def sim(sim_server: SimHandle) -> Iterator[SimHandle]:
    initial = sim_server.config()
    sim_server.reset()
    yield sim_server
    sim_server.config(**initial)


@pytest.fixture
def oai(sim: SimHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.openai_base, api_key="x", max_retries=0)


@pytest.fixture
def claude(sim: SimHandle) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.anthropic_base, api_key="x", max_retries=0)
