"""Shared fixtures: one simulator and one gateway in front of it for the session.

Both are real processes on free ports; tests talk to them with the official SDKs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.helpers.clients import close_all
from tests.helpers.gateway import GatewayHandle, free_port, start_gateway
from tests.helpers.sim import SimHandle, start_simulator

# Output caps of the test gateway, small enough to see them act.
DEFAULT_MAX_TOKENS = 64
MAX_TOKENS_CAP = 100
MAX_BODY_BYTES = 256 * 1024


def gateway_config(sim_url: str) -> dict[str, object]:
    def openai_dep(**kw: object) -> dict[str, object]:
        return {"provider": "openai", "model": "sim-model", "api_base": f"{sim_url}/v1",
                "api_key": "sim-key", **kw}

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    return {
        "server": {"default_max_tokens": DEFAULT_MAX_TOKENS, "max_tokens_cap": MAX_TOKENS_CAP,
                   "max_body_bytes": MAX_BODY_BYTES},
        "models": {
            "sim": {"deployments": [openai_dep()]},
            "sim-claude": {"deployments": [{"provider": "anthropic", "model": "claude-sim",
                                            "api_base": sim_url, "api_key": "sim-key"}]},
            "sim-fast-timeout": {"deployments": [openai_dep(
                timeouts={"connect": 1, "first_token": 0.5, "total": 2})]},
            "sim-fallback": {"deployments": [
                {"provider": "openai", "model": "dead-model", "api_base": dead,
                 "api_key": "k", "timeouts": {"connect": 1, "first_token": 1, "total": 2}},
                openai_dep()]},
        },
        "aliases": {"sim-alias": "sim"},
    }


def cache_config(sim_url: str, **cache: object) -> dict[str, object]:
    """The test gateway with the response cache on (and sim-model priced, so hits save)."""
    cfg = gateway_config(sim_url)
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    cfg["cache"] = {"enabled": True, **cache}
    return cfg


@pytest.fixture(autouse=True)
async def _close_sdk_clients() -> AsyncIterator[None]:
    """Close the SDK clients a test made with `helpers.clients.track`."""
    yield
    await close_all()


@pytest.fixture(scope="session")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator()
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="session")
def gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(gateway_config(sim.url))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def fresh_sim(sim: SimHandle) -> SimHandle:
    """The simulator with default behaviour and zeroed stats."""
    sim.reset()
    sim.config(ttft_ms=0, token_ms=0, output_tokens=16, next_faults=[], rate_429=0,
               rate_500=0, rate_503=0, rate_hang=0, rate_reset=0, rate_drop_stream=0,
               rate_bad_json=0, rate_stall_stream=0,
               ignore_max_tokens=False, drop_after_tokens=None, require_key=None,
               rpm_limit=None, tpm_limit=None)
    return sim
