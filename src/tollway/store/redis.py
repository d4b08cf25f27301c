"""Budgets, rate-limit windows and once-marks in Redis, shared by a fleet of replicas.

Every operation that reads and then writes is one Lua script, so it is atomic across
replicas (Redis runs one script at a time). Semantics follow store/embedded.py
exactly; floats cross the wire as `repr` and come back as `%.17g`, so a level is the
same double the in-memory store would compute.

Key layout (`P` = prefix + layout version, `tw:v1:` by default). The `{b}`/`{l}` hash
tags put every key one script touches in one Redis Cluster slot:

    P{b}:spent:<counter>   string: settled amount (TTL from the window id in its name)
    P{b}:held              hash: counter -> amount held by unexpired holds
    P{b}:holds             zset: hold id, scored by its expiry
    P{b}:hold:<hold id>    list: [lifetime ms, counter, amount, counter, amount, ...]
    P{b}:settled:<hold id> string: marks a settled hold (TTL: the hold's lifetime)
    P{b}:current           string: the counters are current (when they were rebuilt);
                           its absence means Redis lost them: reserves are refused
                           (`stale`) until a replica has rebuilt them from the ledger
    P{b}:rebuild           string: the rebuild lease, the token of the replica holding it
    P{b}:lost              set: holds settled while the counters were not current
    P{b}:lost_spent        hash: counter -> what those settles added to it
    P{l}:log:<counter>     zset: entry id, scored by when it was taken
    P{l}:amt:<counter>     hash: entry id -> amount
    P{l}:sum:<counter>     string: the amounts' running sum (all three: TTL a window
                           after the last entry)
    Ponce:<name>           string: first claim of a name (expires at its `until`)

A new layout is a new version in `P` (old replicas keep their own keys during a
rolling deploy) and new script text; scripts are run by SHA (EVALSHA, loaded again on
NOSCRIPT), so a replica only ever runs the scripts it shipped with.

Time: with `use_server_time` (production) scripts read the Redis clock (`TIME`), as
replicas' clocks may disagree; a hold's expiry becomes a lifetime (`expires_at - now`
on the caller's clock) counted from the server's now. Otherwise they use the caller's
`now` (tests pass fake times).

Memory stays bounded: spent counters expire by window (a day's after 2 days, a month's
after 62, `total` never), limit counters a window after their last entry, settle
marks after the hold's lifetime; expired holds are swept by the next reserve or
levels; the `lost` records go with the rebuild that reads them. Run Redis with
`maxmemory-policy noeviction`: an evicted counter is not noticed (only the marker's
absence is).

After a loss (the marker is gone): settles still add to the counters, and record
themselves in `lost`/`lost_spent`; replicas put back the holds they took
(`restore`); one replica, holding the lease, reads the ledger (leaving out the rows of
the `lost` holds, which the counters have already) and raises each counter to
max(its level, what `lost_spent` added + the ledger's figure) — which is exact after a
loss and never double counts where the counters survived (the marker alone lost) —
then sets the marker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript

from tollway.store.base import (
    BudgetStore,
    Claim,
    LimitStore,
    LiveHold,
    OnceStore,
    RebuildClaim,
    Reservation,
)

LAYOUT = "v1"  # the data layout: bump it (and the scripts) when keys change shape

_DAY = 86400
# A budget counter's window id is the last part of its name (policy/budget.py): its
# TTL is set when it is created, long enough that a late settle still finds it.
_WINDOW_TTLS = ((re.compile(r"h\d{10}"), _DAY), (re.compile(r"d\d{8}"), 2 * _DAY),
                (re.compile(r"m\d{6}"), 62 * _DAY))


def counter_ttl(counter: str) -> int:
    """Seconds a budget counter lives after it is created; 0 for never (`total`)."""
    wid = counter.rsplit("/", 1)[-1]
    return next((ttl for pattern, ttl in _WINDOW_TTLS if pattern.fullmatch(wid)), 0)


def _num(x: float) -> str:
    return repr(float(x))  # the shortest exact form; Lua's tonumber reads it back exactly


# Shared by every script. Numbers go into redis.call as %.17g strings: Lua would
# otherwise format them with 14 digits.
_COMMON = """
local function fmt(x) return string.format('%.17g', x) end
-- A reserve or take's answer: {refused claim (0-based) or -1, each counter's level}.
local function reply(refused, levels)
  local out = {refused}
  for i = 1, #levels do out[i + 1] = fmt(levels[i]) end
  return out
end
local function clock(server, now)
  if server == '1' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return tonumber(now)
end
"""

_BUDGET_COMMON = _COMMON + """
local function release(held, hold)
  local items = redis.call('LRANGE', hold, 1, -1)
  for i = 1, #items, 2 do
    local left = (tonumber(redis.call('HGET', held, items[i])) or 0) - tonumber(items[i + 1])
    if left > 1e-12 then redis.call('HSET', held, items[i], fmt(left))
    else redis.call('HDEL', held, items[i]) end
  end
  redis.call('DEL', hold)
end
local function tidy(holds, held)
  -- No hold left: nothing is held, and no float drift survives.
  if redis.call('ZCARD', holds) == 0 then redis.call('DEL', held) end
end
-- Record a hold: its lifetime (for its settle mark, capped: the mark only has to
-- outlive retries), then (counter, amount) pairs; `pairs_` as strings.
local function put_hold(holds, held, hold, id, life, expiry, pairs_)
  local items = {string.format('%d', math.min(math.max(math.ceil(life * 1000), 1), 604800000))}
  for i = 1, #pairs_, 2 do
    local c = pairs_[i]
    redis.call('HSET', held, c, fmt((tonumber(redis.call('HGET', held, c)) or 0)
                                    + tonumber(pairs_[i + 1])))
    items[#items + 1] = c
    items[#items + 1] = pairs_[i + 1]
  end
  redis.call('RPUSH', hold, unpack(items))
  redis.call('ZADD', holds, fmt(expiry), id)
end
local function sweep(holds, held, hold_prefix, now)
  local gone = redis.call('ZRANGEBYSCORE', holds, '-inf', fmt(now))
  if #gone == 0 then return end
  for _, id in ipairs(gone) do release(held, hold_prefix .. id) end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', fmt(now))
  tidy(holds, held)
end
"""

# KEYS: holds, held, hold, settle mark, marker, spent per claim. ARGV: hold prefix,
# hold id, server?, now, expires_at, then (counter, limit, amount) per claim. Returns
# {refused or -1, levels}, or {-2} when the counters are not current (nothing taken).
# A hold already settled is not taken: its request finished (the client left) while
# this reserve was on its way.
# Swept holds' keys are built from the hold prefix: they share the {b} slot.
_RESERVE = "-- tollway " + LAYOUT + " budgets.reserve" + _BUDGET_COMMON + """
local holds, held, hold = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', KEYS[5]) == 0 then return {-2} end
local now = clock(ARGV[3], ARGV[4])
local life = tonumber(ARGV[5]) - tonumber(ARGV[4])
sweep(holds, held, ARGV[1], now)
local n = (#ARGV - 5) / 3
local levels = {}
for i = 1, n do
  levels[i] = (tonumber(redis.call('GET', KEYS[5 + i])) or 0)
            + (tonumber(redis.call('HGET', held, ARGV[3 * i + 3])) or 0)
end
if redis.call('EXISTS', hold) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  -- A retried reserve (the hold is in place, and in these levels, already), or one
  -- whose request was settled first: nothing to take.
  return reply(-1, levels)
end
for i = 1, n do
  if levels[i] + tonumber(ARGV[3 * i + 5]) > tonumber(ARGV[3 * i + 4]) * (1 + 1e-12) then
    return reply(i - 1, levels)
  end
end
local taken = {}
for i = 1, n do
  taken[#taken + 1] = ARGV[3 * i + 3]
  taken[#taken + 1] = ARGV[3 * i + 5]
  levels[i] = levels[i] + tonumber(ARGV[3 * i + 5])
end
local expiry = tonumber(ARGV[5])  -- exactly as given, on the caller's clock
if ARGV[3] == '1' then expiry = now + life end
put_hold(holds, held, hold, ARGV[2], life, expiry, taken)
return reply(-1, levels)
"""

# KEYS: holds, held. ARGV: hold prefix, settle mark prefix, server?, now, then per
# hold: id, expires_at, n, and n (counter, amount). Holds already there, settled or
# expired are skipped.
_RESTORE = "-- tollway " + LAYOUT + " budgets.restore" + _BUDGET_COMMON + """
local holds, held = KEYS[1], KEYS[2]
local now = clock(ARGV[3], ARGV[4])
local i = 5
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 2])
  local life = tonumber(ARGV[i + 1]) - tonumber(ARGV[4])
  local hold = ARGV[1] .. id
  if life > 0 and redis.call('EXISTS', hold) == 0 and redis.call('EXISTS', ARGV[2] .. id) == 0 then
    local expiry = tonumber(ARGV[i + 1])
    if ARGV[3] == '1' then expiry = now + life end
    put_hold(holds, held, hold, id, life, expiry, {unpack(ARGV, i + 3, i + 2 + 2 * n)})
  end
  i = i + 3 + 2 * n
end
return 0
"""

# KEYS: holds, held, hold, settled mark, marker, lost, lost_spent, spent per charge.
# ARGV: hold id, mark ms for an unknown hold, then (counter, amount, ttl seconds) per
# charge. Returns 1 if first, else 0. With the counters not current, the settle is
# recorded as lost (a rebuild counts it from here, not from its ledger row).
_SETTLE = "-- tollway " + LAYOUT + " budgets.settle" + _BUDGET_COMMON + """
local holds, held, hold = KEYS[1], KEYS[2], KEYS[3]
local life = redis.call('LINDEX', hold, 0)
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', life or ARGV[2]) then return 0 end
if life then
  release(held, hold)
  redis.call('ZREM', holds, ARGV[1])
  tidy(holds, held)
end
local lost = redis.call('EXISTS', KEYS[5]) == 0
if lost then redis.call('SADD', KEYS[6], ARGV[1]) end
for i = 1, (#ARGV - 2) / 3 do
  local key, c = KEYS[7 + i], ARGV[3 * i]
  local amount, ttl = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  if amount ~= 0 then
    local old = redis.call('GET', key)
    local level = fmt((tonumber(old) or 0) + amount)
    if old then redis.call('SET', key, level, 'KEEPTTL')
    elseif ttl > 0 then redis.call('SET', key, level, 'EX', ttl)
    else redis.call('SET', key, level) end
    if lost then
      redis.call('HSET', KEYS[7], c, fmt((tonumber(redis.call('HGET', KEYS[7], c)) or 0) + amount))
    end
  end
end
return 1
"""

# KEYS: holds, held, spent per counter. ARGV: hold prefix, server?, now, counters.
_LEVELS = "-- tollway " + LAYOUT + " budgets.levels" + _BUDGET_COMMON + """
local holds, held = KEYS[1], KEYS[2]
sweep(holds, held, ARGV[1], clock(ARGV[2], ARGV[3]))
local out = {}
for i = 4, #ARGV do
  out[i - 3] = fmt((tonumber(redis.call('GET', KEYS[i - 1])) or 0)
                   + (tonumber(redis.call('HGET', held, ARGV[i])) or 0))
end
return out
"""

# KEYS: spent. ARGV: amount, ttl seconds. Returns the new spent level.
_ADD = "-- tollway " + LAYOUT + " budgets.add" + _COMMON + """
local old = redis.call('GET', KEYS[1])
local level = fmt((tonumber(old) or 0) + tonumber(ARGV[1]))
local ttl = tonumber(ARGV[2])
if old then redis.call('SET', KEYS[1], level, 'KEEPTTL')
elseif ttl > 0 then redis.call('SET', KEYS[1], level, 'EX', ttl)
else redis.call('SET', KEYS[1], level) end
return level
"""

# The rebuild (see the module's docstring). KEYS: marker, lease. ARGV: token, lease ms.
# Returns 0 current, 1 this token holds the lease (taken or renewed), 2 another does.
_CLAIM = "-- tollway " + LAYOUT + " budgets.claim_rebuild" + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 2
"""

# KEYS: lease, lost_spent, spent per counter. ARGV: token, then (counter, amount from
# the ledger, ttl seconds) per counter. Returns 0 when the lease is not this token's.
_RAISE = "-- tollway " + LAYOUT + " budgets.raise" + _COMMON + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 1, (#ARGV - 1) / 3 do
  local key = KEYS[2 + i]
  local want = (tonumber(redis.call('HGET', KEYS[2], ARGV[3 * i - 1])) or 0)
             + tonumber(ARGV[3 * i])
  local old = tonumber(redis.call('GET', key))
  local ttl = tonumber(ARGV[3 * i + 1])
  if old == nil then
    if want > 0 and ttl > 0 then redis.call('SET', key, fmt(want), 'EX', ttl)
    elseif want > 0 then redis.call('SET', key, fmt(want)) end
  elseif want > old then redis.call('SET', key, fmt(want), 'KEEPTTL') end
end
return 1
"""

# KEYS: marker, lease, lost, lost_spent. ARGV: token. 1 when the counters are now
# marked current, 0 when the lease is not this token's.
_CURRENT = "-- tollway " + LAYOUT + " budgets.mark_current" + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], redis.call('TIME')[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return 1
"""

# KEYS: lease. ARGV: token.
_RELEASE = "-- tollway " + LAYOUT + " budgets.release_rebuild" + """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# A counter's window: `log` (entry -> time), `amt` (entry -> amount), `sum`.
_LIMIT_COMMON = _COMMON + """
local function entries(log, from)
  return redis.call('ZRANGE', log, from, from + 99, 'WITHSCORES')
end
local function expire(log, amt, sum, window, now)
  -- An entry leaves when t + window <= now: the same sum free_at returns, so it
  -- leaves at exactly the time the caller was told.
  local total = tonumber(redis.call('GET', sum)) or 0
  local removed, more = 0, true
  while more do
    local batch = entries(log, 0)
    local gone = {}
    for i = 1, #batch, 2 do
      if not (tonumber(batch[i + 1]) + window <= now) then more = false break end
      gone[#gone + 1] = batch[i]
      total = total - (tonumber(redis.call('HGET', amt, batch[i])) or 0)
    end
    if #gone > 0 then
      redis.call('ZREM', log, unpack(gone))
      redis.call('HDEL', amt, unpack(gone))
      removed = removed + #gone
    end
    if #batch < 200 then more = false end
  end
  if removed > 0 then
    if redis.call('EXISTS', log) == 0 then
      redis.call('DEL', amt, sum)  -- an empty window: no float drift survives
      return 0
    end
    redis.call('SET', sum, fmt(total), 'KEEPTTL')
  end
  return total
end
"""

# KEYS: (log, amt, sum) per claim. ARGV: entry id, window, server?, now, then
# (limit, amount) per claim. Returns {refused or -1, levels}.
_TAKE = "-- tollway " + LAYOUT + " limits.take" + _LIMIT_COMMON + """
local id, window = ARGV[1], tonumber(ARGV[2])
local now = clock(ARGV[3], ARGV[4])
local n = #KEYS / 3
local levels = {}
for i = 1, n do
  levels[i] = expire(KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], window, now)
end
for i = 1, n do
  if levels[i] + tonumber(ARGV[2 * i + 4]) > tonumber(ARGV[2 * i + 3]) * (1 + 1e-12) then
    return reply(i - 1, levels)
  end
end
for i = 1, n do
  local log, amt, sum = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local amount = tonumber(ARGV[2 * i + 4])
  -- A caller that read its clock before an await may come in late: recording it at
  -- the newest entry's time keeps the log in order (it counts a moment longer).
  local t = now
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #newest > 0 and tonumber(newest[2]) > t then t = tonumber(newest[2]) end
  -- A retried take replaces its entry rather than counting twice.
  local old = tonumber(redis.call('HGET', amt, id)) or 0
  redis.call('SET', sum, fmt((tonumber(redis.call('GET', sum)) or 0) + (amount - old)))
  redis.call('ZADD', log, fmt(t), id)
  redis.call('HSET', amt, id, ARGV[2 * i + 4])
  local ttl = string.format('%d', math.ceil((t - now + window) * 1000))
  for _, key in ipairs({log, amt, sum}) do redis.call('PEXPIRE', key, ttl) end
  levels[i] = levels[i] + amount
end
return reply(-1, levels)
"""

# KEYS: (amt, sum) per counter. ARGV: entry id, amount per counter.
_ADJUST = "-- tollway " + LAYOUT + " limits.adjust" + _COMMON + """
local id = ARGV[1]
for i = 1, #KEYS / 2 do
  local amt, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local old = tonumber(redis.call('HGET', amt, id))
  if old then
    local amount = tonumber(ARGV[i + 1])
    redis.call('SET', sum, fmt((tonumber(redis.call('GET', sum)) or 0) + (amount - old)),
               'KEEPTTL')
    redis.call('HSET', amt, id, ARGV[i + 1])
  end
end
return 0
"""

# KEYS: log, amt, sum. ARGV: window, server?, now, need, limit. Returns {} when it fits,
# else {when (script clock), the script's now}; need <= limit is checked by the caller.
_FREE_AT = "-- tollway " + LAYOUT + " limits.free_at" + _LIMIT_COMMON + """
local log, amt, sum = KEYS[1], KEYS[2], KEYS[3]
local window = tonumber(ARGV[1])
local now = clock(ARGV[2], ARGV[3])
local total = expire(log, amt, sum, window, now)
local excess = total + tonumber(ARGV[4]) - tonumber(ARGV[5]) * (1 + 1e-12)
if excess <= 0 then return {} end
local from = 0
while true do  -- capacity comes back as the oldest entries leave
  local batch = entries(log, from)
  if #batch == 0 then return {'inf', fmt(now)} end  -- unreachable while need <= limit
  for i = 1, #batch, 2 do
    excess = excess - (tonumber(redis.call('HGET', amt, batch[i])) or 0)
    if excess <= 0 then return {fmt(tonumber(batch[i + 1]) + window), fmt(now)} end
  end
  from = from + 100
end
"""


def _levels(raw: list[Any]) -> list[float]:
    return [float(x) for x in raw]


def _reservation(raw: list[Any]) -> Reservation:
    refused = int(raw[0])
    return Reservation(_levels(raw[1:]), None if refused < 0 else refused)


class _Scripts:
    def __init__(self, r: Redis) -> None:
        self.reserve = r.register_script(_RESERVE)
        self.settle = r.register_script(_SETTLE)
        self.levels = r.register_script(_LEVELS)
        self.add = r.register_script(_ADD)
        self.take = r.register_script(_TAKE)
        self.adjust = r.register_script(_ADJUST)
        self.free_at = r.register_script(_FREE_AT)
        self.restore = r.register_script(_RESTORE)
        self.claim = r.register_script(_CLAIM)
        self.raise_ = r.register_script(_RAISE)
        self.current = r.register_script(_CURRENT)
        self.release = r.register_script(_RELEASE)

    def all(self) -> list[AsyncScript]:
        return list(vars(self).values())


class RedisBudgets:
    RAISE_BATCH = 1000  # counters per rebuild script call: Redis runs one at a time

    def __init__(self, scripts: _Scripts, client: Redis, prefix: str, use_server_time: bool,
                 settled_ttl: float) -> None:
        self._s = scripts
        self._r = client
        self._server = "1" if use_server_time else "0"
        p = prefix + "{b}:"
        self._spent, self._hold, self._settled = p + "spent:", p + "hold:", p + "settled:"
        self._holds, self._held = p + "holds", p + "held"
        self._current, self._lease = p + "current", p + "rebuild"
        self._lost, self._lost_spent = p + "lost", p + "lost_spent"
        # How long a settle mark lives when its hold is already gone (swept after expiry).
        self._settled_ms = str(max(math.ceil(settled_ttl * 1000), 1))

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        keys = [self._holds, self._held, self._hold + hold_id, self._settled + hold_id,
                self._current, *(self._spent + c.counter for c in claims)]
        args = [self._hold, hold_id, self._server, _num(now), _num(expires_at)]
        for c in claims:
            args += (c.counter, _num(c.limit), _num(c.amount))
        raw = await self._s.reserve(keys=keys, args=args)
        if int(raw[0]) == -2:
            return Reservation([], stale=True)
        return _reservation(raw)

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        keys = [self._holds, self._held, self._hold + hold_id, self._settled + hold_id,
                self._current, self._lost, self._lost_spent,
                *(self._spent + counter for counter, _ in charges)]
        args = [hold_id, self._settled_ms]
        for counter, amount in charges:
            args += (counter, _num(amount), str(counter_ttl(counter)))
        return bool(await self._s.settle(keys=keys, args=args))

    async def levels(self, counters: Sequence[str], now: float) -> list[float]:
        keys = [self._holds, self._held, *(self._spent + c for c in counters)]
        args = [self._hold, self._server, _num(now), *counters]
        return _levels(await self._s.levels(keys=keys, args=args))

    async def add(self, counter: str, amount: float) -> float:
        return float(await self._s.add(keys=[self._spent + counter],
                                       args=[_num(amount), str(counter_ttl(counter))]))

    async def claim_rebuild(self, token: str, lease: float) -> RebuildClaim:
        got = int(await self._s.claim(keys=[self._current, self._lease],
                                      args=[token, str(max(math.ceil(lease * 1000), 1))]))
        return "current" if got == 0 else "mine" if got == 1 else "busy"

    async def restore(self, holds: Sequence[LiveHold], now: float) -> None:
        if not holds:
            return
        args = [self._hold, self._settled, self._server, _num(now)]
        for h in holds:
            args += (h.id, _num(h.expires_at), str(len(h.claims)))
            for c in h.claims:
                args += (c.counter, _num(c.amount))
        await self._s.restore(keys=[self._holds, self._held], args=args)

    async def lost_settles(self) -> set[str]:
        found = await self._r.smembers(self._lost)
        return {m.decode() if isinstance(m, bytes) else m for m in found}

    async def commit_rebuild(self, token: str, counters: Sequence[tuple[str, float]]
                             ) -> bool:
        for i in range(0, len(counters), self.RAISE_BATCH):
            batch = counters[i:i + self.RAISE_BATCH]
            args = [token]
            for counter, amount in batch:
                args += (counter, _num(amount), str(counter_ttl(counter)))
            keys = [self._lease, self._lost_spent, *(self._spent + c for c, _ in batch)]
            if not await self._s.raise_(keys=keys, args=args):
                return False
        keys = [self._current, self._lease, self._lost, self._lost_spent]
        return bool(await self._s.current(keys=keys, args=[token]))

    async def release_rebuild(self, token: str) -> None:
        await self._s.release(keys=[self._lease], args=[token])


class RedisLimits:
    def __init__(self, scripts: _Scripts, prefix: str, use_server_time: bool) -> None:
        self._s = scripts
        self._server = use_server_time
        p = prefix + "{l}:"
        self._log, self._amt, self._sum = p + "log:", p + "amt:", p + "sum:"

    def _keys(self, counter: str) -> tuple[str, str, str]:
        return self._log + counter, self._amt + counter, self._sum + counter

    async def take(self, entry_id: str, claims: Sequence[Claim], window: float,
                   now: float) -> Reservation:
        keys = [k for c in claims for k in self._keys(c.counter)]
        args = [entry_id, _num(window), "1" if self._server else "0", _num(now)]
        for c in claims:
            args += (_num(c.limit), _num(c.amount))
        return _reservation(await self._s.take(keys=keys, args=args))

    async def adjust(self, entry_id: str, amounts: Sequence[tuple[str, float]]) -> None:
        if amounts:
            keys = [k for counter, _ in amounts for k in self._keys(counter)[1:]]
            await self._s.adjust(keys=keys,
                                 args=[entry_id, *(_num(amount) for _, amount in amounts)])

    async def free_at(self, counter: str, need: float, limit: float, window: float,
                      now: float) -> float:
        if need > limit * (1 + 1e-12):
            return math.inf
        got = await self._s.free_at(
            keys=list(self._keys(counter)),
            args=[_num(window), "1" if self._server else "0", _num(now), _num(need),
                  _num(limit)])
        if not got:
            return now
        at, script_now = float(got[0]), float(got[1])
        # On the server's clock the answer is a delay: add it to the caller's now.
        return max(now + (at - script_now), now) if self._server else at


class RedisOnce:
    def __init__(self, r: Redis, prefix: str) -> None:
        self._r = r
        self._prefix = prefix + "once:"

    async def first(self, name: str, until: float) -> bool:
        # A mark whose `until` has passed lapses at once, so the next claim wins again.
        pxat = max(math.ceil(until * 1000), 1) if until < 1e15 else None  # else: never
        return bool(await self._r.set(self._prefix + name, 1, nx=True, pxat=pxat))


class RedisStore:
    """Budgets, limits and once-marks in Redis; `open()` before use, `close()` after.

    Errors (Redis down, timeouts) propagate: the gateway decides to fail open or closed.
    """

    def __init__(self, redis_url: str, *, use_server_time: bool = True, prefix: str = "tw:",
                 max_connections: int = 64, timeout: float = 2.0,
                 settled_ttl: float = 900.0) -> None:
        # One quick retry for a pooled connection the server has closed. The scripts
        # are safe to repeat (reserve and take by id, settle once, adjust replaces),
        # except `add`, which only feeds spend alerts.
        pool = BlockingConnectionPool.from_url(
            redis_url, max_connections=max_connections, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1))
        self.client = Redis.from_pool(pool)
        self.prefix = f"{prefix}{LAYOUT}:"
        self._scripts = _Scripts(self.client)
        self.budgets: BudgetStore = RedisBudgets(self._scripts, self.client, self.prefix,
                                                 use_server_time, settled_ttl)
        self.limits: LimitStore = RedisLimits(self._scripts, self.prefix, use_server_time)
        self.once: OnceStore = RedisOnce(self.client, self.prefix)

    async def ping(self) -> None:
        await self.client.ping()

    async def open(self) -> None:
        await self.client.ping()
        for script in self._scripts.all():
            script.sha = await self.client.script_load(script.script)

    async def close(self) -> None:
        await self.client.aclose()
