"""Dollars as the command line prints them, in tables and in CSV alike: exact to the
pico-dollar (prices are), never an exponent, at least cents; a column's values share
its decimals, so they line up and a file reads the same as the table it came from."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

USD_DECIMALS = 12  # prices are exact to the pico-dollar


def usd(x: float, decimals: int | None = None) -> str:
    """0.000138, not 0.00 nor 1.38e-04; trailing zeros trimmed to cents, or padded to
    `decimals` (a column's)."""
    exact = Decimal(repr(round(x, USD_DECIMALS))).normalize()
    if exact == 0:
        exact = Decimal(0)  # not -0
    places = max(2, -int(exact.as_tuple().exponent))
    return f"{exact:.{max(places, decimals or 0)}f}"


def usd_places(values: Sequence[float]) -> int:
    """The decimals a column of these amounts needs."""
    return max((len(usd(v).partition(".")[2]) for v in values), default=2)


def usd_column(values: Sequence[float]) -> list[str]:
    """A column of amounts, all with the decimals the most precise one needs."""
    places = usd_places(values)
    return [usd(v, places) for v in values]
