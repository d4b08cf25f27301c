"""Fixtures for the tests that run gateways on a store of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.redis import RedisServer, redis_server


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the module's own: its tests may stop, restart or flush it."""
    with redis_server() as r:
        yield r
