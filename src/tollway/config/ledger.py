"""The `ledger` section: how the per-request rows are batched into the store."""

from __future__ import annotations

import msgspec


class LedgerConfig(msgspec.Struct, forbid_unknown_fields=True):
    flush_seconds: float = 1.0
    batch_rows: int = 5000
    # Rows waiting while the store is down; past it, the oldest are written to a
    # spill file (never dropped).
    max_buffered_rows: int = 100_000
