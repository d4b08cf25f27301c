"""What a store failure means for the request in hand: `Outages.open` goes on without
the part, `Outages.closed` refuses with 503; a decision (`TollwayError`) is no failure."""

from __future__ import annotations

import logging

import pytest

from tests.unit.fakes import Down, outages
from tollway.errors import BudgetExceeded, Unavailable
from tollway.store.outage import RETRY_AFTER


async def ok() -> str:
    return "levels"


async def refuses() -> str:
    raise BudgetExceeded("over budget")


async def test_open_returns_the_result_and_counts_nothing() -> None:
    o, failed = outages()
    assert await o.open("limits", "limiting here", ok()) == "levels"
    assert failed == []


async def test_open_returns_none_and_counts_the_part_when_the_store_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    o, failed = outages()
    with caplog.at_level(logging.WARNING, logger="tollway"):
        got = await o.open("limits", "limiting in this process", Down().take())
    assert got is None and failed == ["limits"]
    assert caplog.records[0].getMessage() == (
        "rate-limit store unreachable (limiting in this process): store down (take)")


async def test_closed_returns_the_result_when_the_store_answers() -> None:
    o, failed = outages()
    assert await o.closed("keys", "no keys", ok()) == "levels"
    assert failed == []


async def test_closed_refuses_with_503_retry_after_and_the_message() -> None:
    o, failed = outages()
    with pytest.raises(Unavailable) as got:
        await o.closed("budgets", "Spending is paused.", Down().reserve())
    e = got.value
    assert (e.status, e.message, e.retry_after) == (503, "Spending is paused.", RETRY_AFTER)
    assert (b"retry-after", b"5") in e.headers()
    assert isinstance(e.__cause__, ConnectionError)
    assert failed == ["budgets"]


@pytest.mark.parametrize("closed", [False, True])
async def test_a_decision_passes_through_uncounted(closed: bool) -> None:
    o, failed = outages()
    op = o.closed("budgets", "paused", refuses()) if closed else o.open(
        "budgets", "unmetered", refuses())
    with pytest.raises(BudgetExceeded):  # as it was raised, not turned into a 503
        await op
    assert failed == []
