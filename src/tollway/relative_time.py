"""`--since 1h`, `--until yesterday`: the relative times a person types, resolved here
against this machine's clock into epoch seconds, the form the admin API takes. The
API itself stays absolute (a dashboard link means the same window tomorrow); dates
and datetimes pass through unchanged, for the API to read as it always has."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DAYS = {"today": 0, "yesterday": 1}
FORMS = ("a UTC date or datetime (2026-11-01, 2026-11-01T12:00:00Z), epoch seconds, "
         "or a time before now: 30m, 1h, 7d, 2w, today, yesterday, now")
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])(?:\s*ago)?")


def resolve(text: str, now: float, *, end: bool = False) -> str:
    """`text` as the admin API's `since` (or, with `end`, `until`) takes it. A day
    (today, yesterday) is the whole of it, as a date is: from its midnight, or as
    `until` to the next. Raises ValueError for what is no time at all."""
    word = text.strip().lower()
    if word == "now":
        return _epoch(now)
    if (m := _AGO.fullmatch(word)) is not None:
        return _epoch(now - float(m[1]) * UNITS[m[2]])
    if word in DAYS:
        midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
        return _epoch((midnight - timedelta(days=DAYS[word] - end)).timestamp())
    if not _absolute(text.strip()):
        raise ValueError(f"expected {FORMS}, got {text[:80]!r}")
    return text.strip()


def _absolute(text: str) -> bool:
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return True
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _epoch(t: float) -> str:
    return f"{t:.3f}"
