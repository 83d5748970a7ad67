"""Admission on Redis: every limit of a request checked and charged in one round trip, atomically, on Redis' clock.

One Lua script checks every charge, and only if all fit takes them all: two replicas, or sixty-four concurrent
requests, can never both take the last unit. Time is Redis' TIME, never a replica's clock. The keys of one
request share the tenant's hash tag (`{tenant}`), so a Redis Cluster keeps them in one slot.

Per key (see charges.py for the semantics): a window of requests is a sorted set of request ids scored by
admission time; a window of tokens also keeps a hash of their amounts (`:a`) and their total (`:t`); a concurrency key is a sorted set of lease ids scored by
expiry; a budget is a counter per period (`:<day>` or `:<yyyymm>`, UTC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from redis.exceptions import RedisError

from wrapper.limits.charges import BUDGET_KINDS, WINDOW_KINDS, WINDOW_MS, Admission, Charge, Kind
from wrapper.redis_link import RedisLink, Script

logger = logging.getLogger("wrapper.limits")

# Days since 1970-01-01 to (year, month) and back: H. Hinnant's civil-calendar algorithms (Redis' Lua has no `os`).
_CALENDAR = """
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end
local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5)
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local function period(kind, now)
  local day = math.floor(now / 86400000)
  if kind == 'usd_day' then return tostring(day), (day + 1) * 86400000 end
  local y, m = civil(day)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return string.format('%04d%02d', y, m), days_from_civil(ny, nm) * 86400000
end
"""

# Settle a window's entry to what was really used (if it is still in the window), or add a budget's difference
# to the period it was reserved in; release a lease (or, given a value, let it expire that many ms from now: a cut
# stream's, which LiteLLM releases). Per key: kind, value, period, request id.
_SETTLE_ONE = """
local function settle(key, kind, value, p, id, now)
  if kind == 'tokens' then
    local old = redis.call('HGET', key .. ':a', id)
    if old then
      redis.call('HSET', key .. ':a', id, value)
      redis.call('INCRBY', key .. ':t', value - tonumber(old))
    end
  elseif kind == 'concurrency' then
    if value > 0 then redis.call('ZADD', key, 'XX', now + value, id) else redis.call('ZREM', key, id) end
  elseif redis.call('EXISTS', key .. ':' .. p) == 1 then
    redis.call('INCRBY', key .. ':' .. p, value)
  end
end
local function settle_all(first, count, base, now)
  for j = 1, count do
    local b = base + (j - 1) * 4
    settle(KEYS[first + j - 1], ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3], now)
  end
end
"""
ADMIT = Script(_CALENDAR + _SETTLE_ONE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, m = ARGV[1], tonumber(ARGV[2])
settle_all(1, m, 3, now)  -- earlier requests' settlements, brought along: applied before this admission
local n, first = #KEYS - m, 3 + 4 * m
local keys, kinds, limits, amounts, spans, used, pkeys, periods, resets = {}, {}, {}, {}, {}, {}, {}, {}, {}
for i = 1, n do
  local b = first + (i - 1) * 4
  keys[i], kinds[i], limits[i], amounts[i], spans[i] =
    KEYS[m + i], ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
end
for i = 1, n do
  local key, kind, limit, amount = keys[i], kinds[i], limits[i], amounts[i]
  local retry = -1
  if kind == 'requests' then  -- every entry counts one: the set alone
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - spans[i])
    used[i] = redis.call('ZCARD', key)
    if used[i] + amount > limit then
      if amount > limit then return {0, i, -1, now} end
      local nth = redis.call('ZRANGE', key, used[i] + amount - limit - 1, used[i] + amount - limit - 1, 'WITHSCORES')
      return {0, i, tonumber(nth[2]) + spans[i] - now, now}
    end
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    resets[i] = first[2] and tonumber(first[2]) + spans[i] - now or spans[i]
  elseif kind == 'tokens' then
    local cutoff = now - spans[i]
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] and tonumber(oldest[2]) <= cutoff then
      local gone = redis.call('ZRANGEBYSCORE', key, '-inf', cutoff)
      for _, member in ipairs(gone) do
        local a = tonumber(redis.call('HGET', key .. ':a', member) or '0')
        redis.call('HDEL', key .. ':a', member)
        redis.call('DECRBY', key .. ':t', a)
      end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
    end
    used[i] = tonumber(redis.call('GET', key .. ':t') or '0')
    if used[i] + amount > limit then
      if amount <= limit then
        local need, freed = used[i] + amount - limit, 0
        local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
        for j = 1, #entries, 2 do
          freed = freed + tonumber(redis.call('HGET', key .. ':a', entries[j]) or '0')
          if freed >= need then retry = tonumber(entries[j + 1]) + spans[i] - now; break end
        end
      end
      return {0, i, retry, now}
    end
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    resets[i] = first[2] and tonumber(first[2]) + spans[i] - now or spans[i]
  elseif kind == 'concurrency' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    used[i] = redis.call('ZCARD', key)
    if used[i] + amount > limit then
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {0, i, limit > 0 and math.min(1000, tonumber(first[2] or now) - now) or -1, now}
    end
  else
    local p, ends = period(kind, now)
    periods[i], pkeys[i] = p, key .. ':' .. p
    used[i] = tonumber(redis.call('GET', pkeys[i]) or '0')
    if used[i] + amount > limit then return {0, i, amount <= limit and ends - now or -1, now} end
    spans[i] = ends - now
    resets[i] = spans[i]
  end
end
local answer = {1, now, 0}
for i = 1, n do
  local key, kind, amount = keys[i], kinds[i], amounts[i]
  if kind == 'requests' then
    redis.call('ZADD', key, now, id)
    redis.call('PEXPIRE', key, spans[i] * 2)
  elseif kind == 'tokens' then
    redis.call('ZADD', key, now, id)
    redis.call('HSET', key .. ':a', id, amount)
    redis.call('INCRBY', key .. ':t', amount)
    for _, k in ipairs({key, key .. ':a', key .. ':t'}) do redis.call('PEXPIRE', k, spans[i] * 2) end
  elseif kind == 'concurrency' then
    redis.call('ZADD', key, now + spans[i], id)
    redis.call('PEXPIRE', key, spans[i] * 2)
  else
    redis.call('INCRBY', pkeys[i], amount)
    redis.call('PEXPIRE', pkeys[i], spans[i] + 86400000 * 2)
  end
  answer[#answer + 1] = limits[i] - used[i] - amount
  answer[#answer + 1] = periods[i] or ''
  answer[#answer + 1] = resets[i] or 0
end
return answer
""")

SETTLE = Script(_SETTLE_ONE + """
local t = redis.call('TIME')
settle_all(1, #KEYS, 1, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 1
""")


# What each counter holds now, on Redis' clock, read only (reports): ARGV = kind, span for each key.
USED = Script(_CALENDAR + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local answer = {}
for i = 1, #KEYS do
  local key, kind, span = KEYS[i], ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local used = 0
  if kind == 'requests' then
    used = redis.call('ZCOUNT', key, '(' .. (now - span), '+inf')
  elseif kind == 'tokens' then
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. (now - span), '+inf')) do
      used = used + tonumber(redis.call('HGET', key .. ':a', member) or '0')
    end
  elseif kind == 'concurrency' then
    used = redis.call('ZCOUNT', key, '(' .. now, '+inf')
  else
    local p = period(kind, now)
    used = tonumber(redis.call('GET', key .. ':' .. p) or '0')
  end
  answer[i] = used
end
return answer
""")


SETTLE_DELAY = 0.002  # seconds a settlement waits for its tenant's next admission to carry it to Redis


class RedisLimits:
    """Admission and settlement on Redis. A settlement (a request's end: its slot given back, its tokens and cost
    set to what was used) is not a round trip of its own: it waits up to `settle_delay` for the next admission of
    the same tenant on this replica, which carries it in the same script call (applied before that admission is
    judged), or is sent on its own when the delay is up, with every other settlement then waiting."""

    shared = True  # replicas and LiteLLM reach the same counters

    def __init__(self, redis: RedisLink, lease_seconds: float = 900.0, window_ms: int = WINDOW_MS,
                 settle_delay: float = SETTLE_DELAY, timeout: float = 0.25) -> None:
        self.redis = redis
        self.timeout = timeout  # Redis not answering by then is down, for this call: TimeoutError
        self.lease_ms = int(lease_seconds * 1000)  # a lease outlives any request; a dead replica's expire
        self.window_ms = window_ms
        self.settle_delay = settle_delay
        self._waiting: dict[str, list[tuple[str, list]]] = {}  # tenant's hash tag -> (key, its four arguments)
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()

    async def admit(self, request_id: str, charges: list[Charge]) -> Admission:
        return await self.start_admit(request_id, charges)

    def start_admit(self, request_id: str, charges: list[Charge]) -> Awaitable[Admission]:
        """`admit`, its script sent at once (when connected): the caller may work while Redis decides, then awaits."""
        if not charges:
            return _admitted(charges, None)
        carried = self._waiting.pop(_tag(charges[0].key), [])
        args: list = [request_id, len(carried), *(arg for _, four in carried for arg in four)]
        for charge in charges:
            span = self.window_ms if charge.kind in WINDOW_KINDS else self.lease_ms
            args += [charge.kind.value, charge.limit, charge.amount, span]
        return _admitted(charges, self.redis.start(ADMIT, [key for key, _ in carried] + [c.key for c in charges], args,
                                                   self.timeout))

    async def used(self, counters: list[tuple[str, Kind]]) -> list[int]:
        """What each counter holds now (requests, tokens, slots or micro-dollars of the current period)."""
        if not counters:
            return []
        args = [arg for _, kind in counters for arg in (kind.value, self.window_ms)]
        return [int(value) for value in await self.redis.run(USED, [key for key, _ in counters], args)]

    async def keys_like(self, pattern: str) -> list[str]:
        """The keys matching a glob pattern (SCAN: never blocks Redis the way KEYS would)."""
        cursor, found = b"0", set()
        while True:
            cursor, keys = await self.redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found.update(key.decode() for key in keys)
            if cursor == b"0":
                return sorted(found)

    async def settle(self, request_id: str, charge: Charge, used: int, admission: Admission) -> None:
        """A window's entry set to `used`; a budget's period given `used - reserved` more (it may be negative)."""
        await self.settle_all(request_id, [(charge, used)], admission)

    async def release(self, request_id: str, charge: Charge) -> None:
        await self.settle_all(request_id, [(charge, 0)], Admission(True))

    async def settle_all(self, request_id: str, used: list[tuple[Charge, int]], admission: Admission) -> None:
        """Every charge of a request settled (windows and budgets) or released (leases): carried by the tenant's
        next admission, or sent within `settle_delay`."""
        entries = [(charge.key, [charge.kind.value, amount - charge.amount if charge.kind in BUDGET_KINDS else amount,
                                 admission.periods.get(charge.key, ""), request_id]) for charge, amount in used]
        if not entries:
            return
        if self.settle_delay <= 0:
            await self.redis.start(SETTLE, [key for key, _ in entries], [arg for _, four in entries for arg in four],
                                   self.timeout * 4)
            return
        self._waiting.setdefault(_tag(entries[0][0]), []).extend(entries)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.settle_delay, self._send_waiting)

    async def close(self) -> None:
        """Send what waits (a replica shutting down gives its slots back now, not when their leases expire)."""
        if self._flush is not None:
            self._flush.cancel()
        self._send_waiting()
        await asyncio.gather(*self._sending, return_exceptions=True)

    def _send_waiting(self) -> None:
        self._flush = None
        waiting, self._waiting = self._waiting, {}
        for entries in waiting.values():  # one call per tenant: a Redis Cluster keeps each tenant in one slot
            task = asyncio.get_running_loop().create_task(self._send(entries))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, entries: list[tuple[str, list]]) -> None:
        try:
            await self.redis.start(SETTLE, [key for key, _ in entries], [arg for _, four in entries for arg in four],
                                   self.timeout * 4)
        except (RedisError, OSError, TimeoutError) as exc:  # leases expire, reservations stand: safe, never lost
            logger.error("could not settle %d counters (%s)", len(entries), type(exc).__name__)


async def _admitted(charges: list[Charge], sent: Awaitable[object] | None) -> Admission:
    """The ADMIT script's answer, read."""
    if sent is None:
        return Admission(True)
    answer = await sent
    if int(answer[0]) == 0:
        refused = charges[int(answer[1]) - 1]
        retry_ms = int(answer[2])
        return Admission(False, refused, retry_ms / 1000 if retry_ms >= 0 else -1.0, at_ms=int(answer[3]))
    remaining, periods, resets = {}, {}, {}
    for index, charge in enumerate(charges):
        left, period, reset_ms = answer[3 + 3 * index:6 + 3 * index]
        remaining[charge.key], resets[charge.key] = int(left), int(reset_ms) / 1000
        if charge.kind in BUDGET_KINDS:
            periods[charge.key] = period.decode() if isinstance(period, bytes) else str(period)
    return Admission(True, remaining=remaining, periods=periods, resets=resets, at_ms=int(answer[1]))


def _tag(key: str) -> str:
    """A key's hash tag (`{tenant}`): keys of one script call share it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start:end + 1] if start >= 0 and end > start else key
