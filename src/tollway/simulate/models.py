"""Which models the simulator knows: the bundled price table's, and what `models` lists.

Interactive endpoints answer any model name; a batch line, like the provider's batch
worker, is refused (404) for a model neither knows.
"""

from __future__ import annotations

from functools import cache

from tollway.accounting.prices import PriceTable, load_table


@cache
def price_table() -> PriceTable:
    return load_table()


def known_model(model: str, listed: list[str]) -> bool:
    return model in listed or price_table().get(model) is not None
