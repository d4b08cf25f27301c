"""The admin API under /admin: virtual keys and spend, guarded by the master key (or
a console session the master key opened: server/console_session.py); the dashboard's
paths (server/dashboard.py) also let a virtual key, or its session, read its own.

Plain ASGI callables like the rest of the edge. Every path answers every method
itself, so a wrong method still gets the OpenAI error shape (Starlette's 405 would be
plain text). A key's secret leaves the server exactly once, in the `key` field of
the create/rotate answer; its hash never does.

    POST  /admin/keys               create          GET /admin/keys        list
    GET   /admin/keys/{id}          show            PATCH /admin/keys/{id} update
    POST  /admin/keys/{id}/revoke   revoke now      POST .../rotate        rotate
    GET   /admin/spend?by=&since=&until=  (by: day, model (asked), upstream (provider/
                                           model that answered), key, user, team,
                                           feature, kind, batch)
    GET   /admin/ledger?since=&until=&limit=&after=   a page of rows; `next` for the next
    GET   /admin/conversations?owner=&limit=   every owner's (or one owner's)
    GET   /admin/conversations/{id}?owner=     read       DELETE (same)   delete
    POST  /admin/reload             read the configuration again (server/reload.py)
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from starlette.routing import Route

from tollway.accounting.rows import SPEND_GROUPS, SpendRow
from tollway.config import Budget, GuardModes
from tollway.conversation import thread
from tollway.errors import (
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    TollwayError,
    Unauthorized,
)
from tollway.gateway import Gateway
from tollway.keys import PREFIX, KeyRecord, KeySettings, mint
from tollway.policy.auth import Caller, is_master
from tollway.server.asgi import (
    ClientGone,
    Edge,
    Headers,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    json_bytes,
    query,
    read_body,
    send_error,
    send_json,
    whole_number,
)
from tollway.server.conversations import LIST_PAGE, MAX_LIST
from tollway.server.key_settings import check_seconds, check_settings, storable

log = logging.getLogger("tollway.admin")

MAX_BODY = 64 * 1024  # an admin body is a few hundred bytes
LEDGER_PAGE, MAX_LEDGER_PAGE = 1000, 10_000  # rows per /admin/ledger page
DEFAULT_GRACE_SECONDS = 86400.0
# Every path takes every method and refuses the wrong ones itself (see the docstring).
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PRIVATE_FIELDS = frozenset({"hash"})
# What a rotation carries over to the new key (lineage is passed separately).
ROTATED_SETTINGS = ("name", "user", "team", "features", "models", "rpm", "tpm", "budgets",
                    "guards", "expires_at", "disabled")


class NewKey(KeySettings, forbid_unknown_fields=True):
    expires_in_seconds: float | None = None


class KeyPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; null clears a nullable one."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    user: str | msgspec.UnsetType | None = msgspec.UNSET
    team: str | msgspec.UnsetType | None = msgspec.UNSET
    features: list[str] | msgspec.UnsetType = msgspec.UNSET
    models: list[str] | msgspec.UnsetType = msgspec.UNSET
    rpm: int | msgspec.UnsetType | None = msgspec.UNSET
    tpm: int | msgspec.UnsetType | None = msgspec.UNSET
    budgets: list[Budget] | msgspec.UnsetType = msgspec.UNSET
    guards: GuardModes | msgspec.UnsetType | None = msgspec.UNSET
    disabled: bool | msgspec.UnsetType = msgspec.UNSET
    expires_at: float | msgspec.UnsetType | None = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        return {f: v for f in self.__struct_fields__
                if (v := getattr(self, f)) is not msgspec.UNSET}


class Rotation(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: float = DEFAULT_GRACE_SECONDS


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is reading: the master key (`key` None: every key's rows) or a virtual key
    (`key`: its lineage, whose rows alone it may read)."""

    key: str | None


@dataclass(frozen=True, slots=True)
class Result:
    status: int
    body: Any  # JSON-able builtins


Handler = Callable[[Scope, Receive], Awaitable[Result]]
S = TypeVar("S")


def status(rec: KeyRecord, now: float) -> str:
    """One word for listings: active, rotating (in its grace period), revoked,
    disabled, expired, rotated (grace over)."""
    why = rec.refusal(now)
    if why is None:
        return "rotating" if rec.replaced_by else "active"
    if rec.revoked_at is not None and rec.revoked_at <= now:
        return "revoked"
    if rec.disabled:
        return "disabled"
    return "rotated" if rec.replaced_by else "expired"


def public_view(rec: KeyRecord, now: float) -> dict[str, Any]:
    """The record without its hash (derived from the fields, so a new field shows up
    without anyone remembering to add it here), plus its status at `now`."""
    view: dict[str, Any] = msgspec.to_builtins(
        {f: getattr(rec, f) for f in rec.__struct_fields__ if f not in PRIVATE_FIELDS})
    view["status"] = status(rec, now)
    return view


def decode(body: bytes, kind: type[S]) -> S:
    """JSON body -> `kind`; an empty body is an empty object. Failures name the field."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as e:
        raise invalid_field(str(e)) from None
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"The body is not valid JSON: {e}.") from None


def invalid_field(msg: str) -> InvalidRequest:
    """msgspec says 'Expected `int`, got `str` - at `$.rpm`'; lead with the field."""
    m = re.search(r" - at `\$\.?(.*)`$", msg)
    if m and m.group(1):
        return InvalidRequest(f"{m.group(1)}: {msg[: m.start()]}", param=m.group(1))
    m = re.match(r"Object contains unknown field `(.+?)`", msg)
    if m:
        return InvalidRequest(f"{m.group(1)}: unknown field", param=m.group(1))
    return InvalidRequest(msg)


def parse_time(text: str, param: str, *, end: bool = False) -> float:
    """Epoch seconds, an ISO datetime (UTC unless it says otherwise) or an ISO date.
    A date alone covers its whole day: as `until` it means the next midnight, so
    since=2026-11-01&until=2026-11-30 is all of November."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            epoch = float(text)
            if math.isfinite(epoch):
                return epoch
            raise ValueError(text)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            return (day + timedelta(days=1 if end else 0)).timestamp()
        t = datetime.fromisoformat(text)
    except (ValueError, OverflowError):  # not a time, or one past the calendar's ends
        pass
    else:
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    raise InvalidRequest(f"{param}: expected a date (2026-11-01), a UTC datetime "
                         f"(2026-11-01T12:00:00Z) or epoch seconds, got {text[:80]!r}", param=param)


def window(q: dict[str, str]) -> tuple[float | None, float | None]:
    since = parse_time(q["since"], "since") if q.get("since") else None
    until = parse_time(q["until"], "until", end=True) if q.get("until") else None
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("until: must be after since", param="until")
    return since, until


def total(rows: list[SpendRow]) -> SpendRow:
    return SpendRow(group="total", requests=sum(r.requests for r in rows),
                    input_tokens=sum(r.input_tokens for r in rows),
                    output_tokens=sum(r.output_tokens for r in rows),
                    cost_usd=sum(r.cost_usd for r in rows),
                    saved_usd=sum(r.saved_usd for r in rows))


def to_pico(row: SpendRow) -> SpendRow:
    # Prices are exact to the pico-dollar; rounding there only drops float-sum noise.
    return msgspec.structs.replace(row, cost_usd=round(row.cost_usd, 12),
                                   saved_usd=round(row.saved_usd, 12))


class Admin:
    """The handlers. Key changes are read-modify-write on the store, so they take one
    lock: two concurrent rotations of a key must not mint two successors."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._lock = asyncio.Lock()

    async def authorize(self, e: Edge, *, viewers: bool) -> Viewer:
        """The master key (or a console session it opened) reads everything; a virtual
        key or its session (`viewers`: the dashboard's paths) reads only its own
        lineage's. A virtual key anywhere else is a 403: the rest of the admin API is
        about every key."""
        auth, secret = self.gateway.config.auth, e.api_key
        if not auth.master_key:
            raise Forbidden("The admin API is disabled: no master key is configured. Set "
                            "TOLLWAY_MASTER_KEY (or auth.master_key) and restart.",
                            code="admin_disabled")
        if e.session is not None and secret is None:
            caller = await self.gateway.authenticate(None, Caller(), e.session)
            if caller.master:
                return Viewer(None)
            if caller.key is not None and viewers:
                return Viewer(caller.key.lineage)
            raise Forbidden("The admin API takes the master key; this console session "
                            "is a virtual key's.", code="master_key_required")
        if is_master(secret, auth):
            return Viewer(None)
        if secret is not None and secret.startswith(PREFIX):
            key = (await self.gateway.authenticate(secret, Caller())).key  # 401 if bad
            if key is not None and viewers:
                return Viewer(key.lineage)
            if key is not None:
                raise Forbidden(f"API key {key.id} may read only its own dashboard "
                                "(/admin/dashboard/*); the rest of the admin API takes the "
                                "master key.", code="master_key_required")
        what = "Missing" if secret is None else "Invalid"
        raise Unauthorized(f"{what} master key: the admin API takes the master key as "
                           "'Authorization: Bearer <key>' or in the 'x-api-key' header"
                           + (" (the dashboard also a virtual key)." if viewers else "."))

    def now(self) -> float:
        return self.gateway.clock()

    def served(self) -> Served:
        return Served(self.gateway)

    async def _key(self, scope: Scope) -> KeyRecord:
        kid = scope["path_params"]["id"]
        rec = await self.gateway.store.keys.by_id(kid)
        if rec is None:
            raise NotFound(f"No key with id '{kid}'.", param="id")
        return rec

    async def _body(self, scope: Scope, receive: Receive, kind: type[S]) -> S:
        check_json_content_type(scope)
        return decode(await read_body(scope, receive, MAX_BODY), kind)

    async def create_key(self, scope: Scope, receive: Receive) -> Result:
        req = await self._body(scope, receive, NewKey)
        check_seconds(req.expires_in_seconds, "expires_in_seconds")
        now = self.now()
        settings = msgspec.to_builtins(req)
        given = [f for f in settings if f != "expires_in_seconds"]
        del settings["expires_in_seconds"]
        if req.expires_in_seconds is not None:
            settings["expires_at"] = now + req.expires_in_seconds
        secret, rec = mint(now, **settings)
        check_settings(rec, given, self.served())
        storable(rec)
        await self.gateway.store.keys.put(rec)
        log.info("admin: created key %s (%s)", rec.id, rec.hint)
        return Result(201, {"key": secret, "record": public_view(rec, now)})

    async def list_keys(self, scope: Scope, receive: Receive) -> Result:
        now = self.now()
        recs = await self.gateway.store.keys.all()
        return Result(200, {"data": [public_view(r, now) for r in recs]})

    async def get_key(self, scope: Scope, receive: Receive) -> Result:
        return Result(200, public_view(await self._key(scope), self.now()))

    async def update_key(self, scope: Scope, receive: Receive) -> Result:
        changes = (await self._body(scope, receive, KeyPatch)).changes()
        async with self._lock:
            rec = msgspec.structs.replace(await self._key(scope), **changes)
            check_settings(rec, changes, self.served())
            storable(rec)
            await self.gateway.store.keys.put(rec)
        log.info("admin: updated key %s (%s)", rec.id, ", ".join(changes) or "no change")
        return Result(200, public_view(rec, self.now()))

    async def revoke_key(self, scope: Scope, receive: Receive) -> Result:
        async with self._lock:
            rec = await self._key(scope)
            now = self.now()
            if rec.revoked_at is None or rec.revoked_at > now:  # keep the first revocation
                rec = msgspec.structs.replace(rec, revoked_at=now)
                await self.gateway.store.keys.put(rec)
                log.info("admin: revoked key %s (%s)", rec.id, rec.hint)
        return Result(200, public_view(rec, now))

    async def rotate_key(self, scope: Scope, receive: Receive) -> Result:
        grace = (await self._body(scope, receive, Rotation)).grace_seconds
        check_seconds(grace, "grace_seconds", allow_zero=True)
        keys = self.gateway.store.keys
        async with self._lock:
            old = await self._key(scope)
            now = self.now()
            refuse_rotation(old, now)
            settings = msgspec.to_builtins(old)
            secret, new = mint(now, lineage=old.lineage,
                               **{f: settings[f] for f in ROTATED_SETTINGS})
            ends = now + grace
            old = msgspec.structs.replace(
                old, replaced_by=new.id,
                expires_at=ends if old.expires_at is None else min(old.expires_at, ends))
            storable(new)  # both checked before either is written
            storable(old)
            # The new key first: a failure between the writes leaves the old one valid.
            await keys.put(new)
            await keys.put(old)
        log.info("admin: rotated key %s -> %s (grace %ss)", old.id, new.id, grace)
        return Result(201, {"key": secret, "record": public_view(new, now),
                           "old": public_view(old, now)})

    async def spend(self, scope: Scope, receive: Receive) -> Result:
        q = query(scope, ("by", "since", "until"))
        by = q.get("by") or "day"
        if by not in SPEND_GROUPS:
            raise InvalidRequest(f"by: one of {', '.join(SPEND_GROUPS)}, got {by!r}",
                                 param="by")
        since, until = window(q)
        await self.gateway.ledger.flush()  # so every finished request is counted
        rows = [to_pico(r) for r in
                await self.gateway.store.ledger.spend(by, since, until)]
        return Result(200, {"by": by, "since": since, "until": until,
                           "data": msgspec.to_builtins(rows),
                           "total": msgspec.to_builtins(to_pico(total(rows)))})

    async def ledger(self, scope: Scope, receive: Receive) -> Result:
        """A page of rows in time order; `next` (when more may follow) is the `after` of
        the next page."""
        q = query(scope, ("since", "until", "after", "limit"))
        since, until = window(q)
        limit = whole_number(q.get("limit"), "limit", LEDGER_PAGE, 1, MAX_LEDGER_PAGE)
        after = cursor(q["after"], "after") if q.get("after") else None
        await self.gateway.ledger.flush()
        rows = await self.gateway.store.ledger.rows(since, until, after=after,
                                                         limit=limit)
        more = f"{rows[-1].ts!r}|{rows[-1].id}" if len(rows) == limit else None
        return Result(200, {"data": msgspec.to_builtins(rows), "next": more})

    async def list_conversations(self, scope: Scope, receive: Receive) -> Result:
        q = query(scope, ("owner", "limit"))
        found = await self.gateway.store.conversations.list(
            q.get("owner") or None,
            whole_number(q.get("limit"), "limit", LIST_PAGE, 1, MAX_LIST))
        return Result(200, {"object": "list", "data": [
            {**thread.summary_view(i), "owner": i.owner} for i in found]})

    async def get_conversation(self, scope: Scope, receive: Receive) -> Result:
        owner, cid = self._conversation(scope)
        stored = await self.gateway.store.conversations.load(owner, cid)
        if stored is None:
            raise NotFound(f"No conversation '{cid}' owned by '{owner}'.", param="id")
        return Result(200, {**thread.view(stored), "owner": owner})

    async def delete_conversation(self, scope: Scope, receive: Receive) -> Result:
        owner, cid = self._conversation(scope)
        if not await self.gateway.store.conversations.delete(owner, cid):
            raise NotFound(f"No conversation '{cid}' owned by '{owner}'.", param="id")
        log.info("admin: deleted conversation %s of %s", cid, owner)
        return Result(200, {"id": cid, "object": "conversation.deleted", "deleted": True,
                            "owner": owner})

    @staticmethod
    def _conversation(scope: Scope) -> tuple[str, str]:
        owner = query(scope, ("owner",)).get("owner")
        if not owner:
            raise InvalidRequest("owner: required — conversation ids are unique per owner "
                                 "(GET /admin/conversations lists them with their owner)",
                                 param="owner")
        return owner, thread.check_id(scope["path_params"]["id"], "id")


def cursor(text: str, param: str) -> tuple[float, str]:
    """`after` (`before`): the `next` of the previous page (`<ts>|<row id>`)."""
    ts, sep, rid = text.partition("|")
    try:
        t = float(ts)
    except ValueError:
        t = math.nan
    if not (sep and math.isfinite(t)):
        raise InvalidRequest(f"{param}: the 'next' value of the previous page (<time>|<row "
                             f"id>), got {text[:80]!r}", param=param)
    return t, rid


def refuse_rotation(rec: KeyRecord, now: float) -> None:
    """Rotation replaces a working key; a dead one would come back to life."""
    why = None
    if rec.replaced_by:
        why = f"was already rotated; rotate its successor {rec.replaced_by} instead"
    elif rec.revoked_at is not None and rec.revoked_at <= now:
        why = "has been revoked; create a new key instead"
    elif rec.expires_at is not None and rec.expires_at <= now:
        why = "has expired; create a new key (or PATCH its expires_at) instead"
    if why is not None:
        raise InvalidRequest(f"Key {rec.id} {why}.", param="id", code="key_not_rotatable",
                             status=409)


class Endpoint:
    """One admin path: the method's handler, behind the master key (`viewers`: or a
    virtual key, the reader a handler finds in scope["tollway.viewer"])."""

    def __init__(self, admin: Admin, handlers: dict[str, Handler], *,
                 viewers: bool = False) -> None:
        self.admin = admin
        self.handlers = handlers
        self.viewers = viewers
        self.allow = ", ".join(handlers).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e: Edge = scope.get("tollway.edge") or Edge(scope)
        # Admin answers are never worth caching, and some carry a secret.
        headers: Headers = [(b"x-request-id", e.request_id.encode()),
                            (b"cache-control", b"no-store")]
        handler = self.handlers.get(scope["method"])
        if handler is None:
            err = MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                                   f"use {self.allow.decode()}.")
            await send_error(send, err, [*headers, (b"allow", self.allow)])
            return
        try:
            scope["tollway.viewer"] = await self.admin.authorize(e, viewers=self.viewers)
            reply = await handler(scope, receive)
            body = json_bytes(reply.body)
        except TollwayError as err:
            await send_error(send, err, headers)
            return
        except ClientGone:
            return
        except Exception:  # a bug: still a JSON error, never the server's plain text
            log.exception("admin: internal error (%s)", e.request_id)
            await send_error(send, TollwayError(f"Internal error; the request id is "
                                                f"{e.request_id}."), headers)
            return
        await send_json(send, reply.status, body, headers)


class Served(Collection[str]):
    """What a key's `models` may name: whatever a request could be served by (an
    alias, a wildcard alias, a name a wildcard serves) and any pattern ending in `*`
    (policy/auth.allows). Listed as the configured names and the priced models."""

    def __init__(self, gateway: Gateway) -> None:
        self.routes = gateway.routes

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name.endswith("*") or name in self._configured()
                                          or self.routes.servable(name))

    def _configured(self) -> list[str]:
        return self.routes.config.public_models()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._configured(), *self.routes.listed()}))

    def __len__(self) -> int:
        return len(list(iter(self)))


def admin_routes(gateway: Gateway, reload: Handler | None = None) -> list[Route]:
    """`reload`: POST /admin/reload's handler (server/reload.py), when there is one."""
    a = Admin(gateway)

    def route(path: str, **handlers: Handler) -> Route:
        return Route(path, Endpoint(a, handlers), methods=ANY_METHOD)

    return [
        route("/admin/keys", GET=a.list_keys, POST=a.create_key),
        route("/admin/keys/{id}", GET=a.get_key, PATCH=a.update_key),
        route("/admin/keys/{id}/revoke", POST=a.revoke_key),
        route("/admin/keys/{id}/rotate", POST=a.rotate_key),
        route("/admin/spend", GET=a.spend),
        route("/admin/ledger", GET=a.ledger),
        route("/admin/conversations", GET=a.list_conversations),
        route("/admin/conversations/{id}", GET=a.get_conversation,
              DELETE=a.delete_conversation),
        *([route("/admin/reload", POST=reload)] if reload is not None else []),
    ]
