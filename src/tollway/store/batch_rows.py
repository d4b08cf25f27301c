"""How both SQL batch stores keep a file, a batch and a line as a row: the columns are
the dataclasses' fields, in their order (a line's `index` is the column `idx`), so a
row read back converts by position. And the SQL they share, with SQLite's numbered
parameters (?1), which PostgreSQL spells $1."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from tollway.store.base import BatchLine, BatchRecord, StoredFile

FILE_COLUMNS = ", ".join(f.name for f in fields(StoredFile))
BATCH_COLUMNS = ", ".join(f.name for f in fields(BatchRecord))
LINE_COLUMN_NAMES = ["idx" if f.name == "index" else f.name for f in fields(BatchLine)]
LINE_COLUMNS = ", ".join(LINE_COLUMN_NAMES)


def file_of(row: Any) -> StoredFile:
    return StoredFile(*row)


def batch_of(row: Any) -> BatchRecord:
    return BatchRecord(*row)


def line_of(row: Any) -> BatchLine:
    return BatchLine(*row)


# A new batch's and a new line's values, in the columns' order.
batch_row: Callable[[BatchRecord], tuple[Any, ...]] = attrgetter(
    *(f.name for f in fields(BatchRecord)))
line_row: Callable[[BatchLine], tuple[Any, ...]] = attrgetter(
    *(f.name for f in fields(BatchLine)))


# Newest first, after the row `after` (none when this owner has no such row):
# ?1 owner, ?2 after, ?3 limit, ?4 purpose (None: every file) or the batch ids' prefix
# ("": every batch). (The casts tell PostgreSQL the type of a parameter that may be
# NULL, or that length() is given text.)
_PAGE = """
SELECT {cols} FROM {table} WHERE owner = ?1 AND {also}
  AND (CAST(?2 AS text) IS NULL OR (created_at, id) < (SELECT created_at, id FROM {table}
                                                       WHERE owner = ?1 AND id = ?2))
ORDER BY created_at DESC, id DESC LIMIT ?3"""
LIST_FILES = _PAGE.format(cols=FILE_COLUMNS, table="files",
                          also="(CAST(?4 AS text) IS NULL OR purpose = ?4)")
LIST_BATCHES = _PAGE.format(cols=BATCH_COLUMNS, table="batches",
                            also="substr(id, 1, length(CAST(?4 AS text))) = ?4")
