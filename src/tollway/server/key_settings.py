"""What an admin may set on a virtual key: every field within what the stores, the
listings and the request path can hold — 64-bit integers, finite times, names of a
readable length — checked before anything is written.

`storable` is the last check before a write: the record must encode the way the key
store and `GET /admin/keys` encode it, and decode back unchanged. A record that
passed the field checks cannot fail it; a field added later without a check can, and
then the admin API answers 400 instead of storing a key that breaks every listing.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import msgspec
import orjson

from tollway.config import check_budget, check_threshold
from tollway.errors import ConfigError, InvalidRequest
from tollway.keys import KeyRecord

INT64_MAX = 2**63 - 1
MAX_TEXT = 256  # a name, user, team, feature tag or model name
MAX_ITEMS = 100  # features, models, budgets per key
# Expiry and grace periods: finite times within the calendar (year 9999), so they
# stay times when encoded (an infinite float would be written as null: never expires).
MAX_SECONDS = 253_402_300_799.0


def _fail(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param)


def check_seconds(v: float | None, param: str, *, allow_zero: bool = False) -> None:
    """A duration or a time in epoch seconds: finite, positive, within the calendar."""
    if v is None:
        return
    low_ok = v >= 0 if allow_zero else v > 0
    if not (math.isfinite(v) and low_ok and v <= MAX_SECONDS):
        raise _fail(param, f"must be {'>= 0' if allow_zero else '> 0'} and at most "
                    f"{MAX_SECONDS:.0f} seconds, got {v}")


def _text(v: str | None, param: str) -> None:
    if v is not None and len(v) > MAX_TEXT:
        raise _fail(param, f"at most {MAX_TEXT} characters, got {len(v)}")


def _items(items: list[str], param: str) -> None:
    if len(items) > MAX_ITEMS:
        raise _fail(param, f"at most {MAX_ITEMS} entries, got {len(items)}")
    for i, item in enumerate(items):
        _text(item, f"{param}[{i}]")


def check_settings(rec: KeyRecord, fields: Collection[str], served: Collection[str]) -> None:
    """Validate the settings named in `fields` (only those a request set: a model
    since removed from the config must not block renaming the key)."""
    for name in ("name", "user", "team"):
        if name in fields:
            _text(getattr(rec, name), name)
    for name in ("rpm", "tpm"):
        n = getattr(rec, name)
        if name in fields and n is not None and not 1 <= n <= INT64_MAX:
            raise _fail(name, f"must be from 1 to {INT64_MAX} (or null for no limit), got {n}")
    if "budgets" in fields:
        if len(rec.budgets) > MAX_ITEMS:
            raise _fail("budgets", f"at most {MAX_ITEMS} entries, got {len(rec.budgets)}")
        for i, b in enumerate(rec.budgets):
            where = f"budgets[{i}]"
            try:
                check_budget(b, where)
            except ConfigError as e:
                raise InvalidRequest(str(e), param=where) from None
            if b.tokens is not None and b.tokens > INT64_MAX:
                raise _fail(f"{where}.tokens", f"at most {INT64_MAX}, got {b.tokens}")
    if "guards" in fields and rec.guards is not None:
        try:
            check_threshold(rec.guards.injection_threshold, "guards.injection_threshold")
        except ConfigError as e:
            raise InvalidRequest(str(e), param="guards.injection_threshold") from None
    if "features" in fields:
        _items(rec.features, "features")
        if not all(f.strip() for f in rec.features):
            raise _fail("features", "tags must not be empty")
    if "models" in fields:
        _items(rec.models, "models")
        unknown = [m for m in rec.models if m not in served]
        if unknown:
            raise _fail("models", f"{', '.join(map(repr, unknown))} not served here; this "
                        f"gateway serves: {', '.join(served)}")
    if "expires_at" in fields:
        check_seconds(rec.expires_at, "expires_at")


def storable(rec: KeyRecord) -> None:
    """The record encodes as the key store and the listings encode it, and reads back
    the same: otherwise it is refused before anything is written."""
    try:
        orjson.dumps(msgspec.to_builtins(rec))  # GET /admin/keys
        same = msgspec.json.decode(msgspec.json.encode(rec), type=KeyRecord) == rec
    except (TypeError, ValueError, msgspec.MsgspecError) as e:
        raise InvalidRequest(f"The key's settings cannot be stored: {e}.") from None
    if not same:
        raise InvalidRequest("The key's settings cannot be stored: a value does not read "
                             "back as written.")
