"""Admission on Redis: every limit of a request checked and charged in one round trip, atomically, on Redis' clock.

One Lua script checks every charge, and only if all fit takes them all: two replicas, or sixty-four concurrent
requests, can never both take the last unit. Time is Redis' TIME, never a replica's clock. The keys of one
request share the tenant's hash tag (`{tenant}`), so a Redis Cluster keeps them in one slot.

Per scope (see charges.py for the semantics): its requests and tokens per minute share one log, `<scope>:window`, a
sorted set of `<entry>:<tokens>` scored by admission time, with the tokens' total in `<scope>:window:t`: the
requests in the window are its size, the tokens its total. One log, not one per kind, because each Redis call a
script makes costs ~3 µs here and a request waits for them all: a scope with both limits costs 8 calls, not 14. A
concurrency key is a sorted set of lease ids scored by expiry; a budget is a counter per period (`:<day>` or
`:<yyyymm>`, UTC). The store's interface stays per charge (`<scope>:requests`, `<scope>:tokens`): reports and
headers name those.
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
# stream's, which LiteLLM releases). Per key: kind, value, period (a window's: when its entry was admitted), entry.
_SETTLE_ONE = """
local function amount_of(entry)
  return tonumber(string.match(entry, ':(%d+)$') or '0')
end
local function settle(key, kind, value, p, id, now)
  if kind == 'window' then  -- id: the entry as admitted, `<entry>:<tokens reserved>`
    if redis.call('ZREM', key, id) == 1 then
      if p == '' then  -- an admission whose answer was never read: dropped
        redis.call('DECRBY', key .. ':t', amount_of(id))
      else
        redis.call('ZADD', key, p, string.match(id, '^(.*):') .. ':' .. value)
        redis.call('INCRBY', key .. ':t', value - amount_of(id))
      end
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
# Per counter, five arguments: kind, two limits, amount, span. A window's limits are its requests' and its tokens'
# (-1: none), its amount the tokens; the others' second limit is unused. The answer has three values per charge
# (what is left, a budget's period, ms until some frees), a window's requests before its tokens, as the charges
# are listed; a refusal names its charge by its place in that list.
ADMIT = Script(_CALENDAR + _SETTLE_ONE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, m = ARGV[1], tonumber(ARGV[2])
settle_all(1, m, 3, now)  -- earlier requests' settlements, brought along: applied before this admission
local n, first = #KEYS - m, 3 + 4 * m
local answer, charge, writes, periods = {1, now, 0}, 0, {}, {}
local function add(left, period, reset)
  answer[#answer + 1] = left
  answer[#answer + 1] = period
  answer[#answer + 1] = reset
end
for i = 1, n do
  local b = first + (i - 1) * 5
  local key, kind, limit, limit2, amount, span =
    KEYS[m + i], ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if kind == 'window' then
    local cutoff = now - span
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] and tonumber(oldest[2]) <= cutoff then  -- entries that left the window: out, with their tokens
      local freed = 0
      for _, entry in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', cutoff)) do freed = freed + amount_of(entry) end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
      if freed ~= 0 then redis.call('DECRBY', key .. ':t', freed) end
      oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    end
    local reset = oldest[2] and tonumber(oldest[2]) + span - now or span
    if limit >= 0 then  -- requests: every entry counts one
      charge = charge + 1
      local used = redis.call('ZCARD', key)
      if used + 1 > limit then
        if limit < 1 then return {0, charge, -1, now} end
        local nth = redis.call('ZRANGE', key, used - limit, used - limit, 'WITHSCORES')
        return {0, charge, tonumber(nth[2]) + span - now, now}
      end
      add(limit - used - 1, '', reset)
    end
    if limit2 >= 0 then  -- tokens
      charge = charge + 1
      local used = tonumber(redis.call('GET', key .. ':t') or '0')
      if used + amount > limit2 then
        local retry = -1
        if amount <= limit2 then  -- when enough will have left for this request to fit
          local need, freed = used + amount - limit2, 0
          local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
          for j = 1, #entries, 2 do
            freed = freed + amount_of(entries[j])
            if freed >= need then retry = tonumber(entries[j + 1]) + span - now; break end
          end
        end
        return {0, charge, retry, now}
      end
      add(limit2 - used - amount, '', reset)
    end
    writes[#writes + 1] = {key, kind, amount, span}
  elseif kind == 'concurrency' then
    charge = charge + 1
    local used = redis.call('ZCARD', key)
    if used + amount > limit then  -- full, counting leases that expired (a dead replica's): those out, and again
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      used = redis.call('ZCARD', key)
    end
    if used + amount > limit then
      local soonest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {0, charge, limit > 0 and math.min(1000, tonumber(soonest[2] or now) - now) or -1, now}
    end
    add(limit - used - amount, '', 0)
    writes[#writes + 1] = {key, kind, amount, span}
  else
    charge = charge + 1
    periods[kind] = periods[kind] or {period(kind, now)}  -- one calendar sum per kind, not per counter
    local p, ends = periods[kind][1], periods[kind][2]
    local pkey = key .. ':' .. p
    local used = tonumber(redis.call('GET', pkey) or '0')
    if used + amount > limit then return {0, charge, amount <= limit and ends - now or -1, now} end
    add(limit - used - amount, p, ends - now)
    writes[#writes + 1] = {pkey, kind, amount, ends - now}
  end
end
-- A key written now lasts `span` more at least: its time to live is set to twice that, and set again only once
-- less than `span` is left, not on every call (a PEXPIRE is a write; PTTL, a read, costs Redis less)
local function lasts(key, span)
  if redis.call('PTTL', key) >= span then return false end
  redis.call('PEXPIRE', key, span * 2)
  return true
end
for _, w in ipairs(writes) do  -- every limit fits: take them all
  local key, kind, amount, span = w[1], w[2], w[3], w[4]
  if kind == 'window' then
    redis.call('ZADD', key, now, id .. ':' .. amount)
    redis.call('INCRBY', key .. ':t', amount)
    if lasts(key, span) then redis.call('PEXPIRE', key .. ':t', span * 2) end  -- they expire together
  elseif kind == 'concurrency' then
    redis.call('ZADD', key, now + span, id)
    lasts(key, span * 2)  -- two leases' length: a lease a hang-up extends (its grace) still has its key
  else
    redis.call('INCRBY', key, amount)
    lasts(key, span + 86400000)  -- its period, and a day more
  end
end
return answer
""")

SETTLE = Script(_SETTLE_ONE + """
local t = redis.call('TIME')
settle_all(1, #KEYS, 1, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 1
""")


# What each counter holds now, on Redis' clock, read only (reports): ARGV = kind, span for each key (a requests'
# or tokens' key is its scope's window).
USED = Script(_CALENDAR + _SETTLE_ONE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local answer = {}
for i = 1, #KEYS do
  local key, kind, span = KEYS[i], ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local used = 0
  if kind == 'requests' then
    used = redis.call('ZCOUNT', key, '(' .. (now - span), '+inf')
  elseif kind == 'tokens' then
    for _, entry in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. (now - span), '+inf')) do
      used = used + amount_of(entry)
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


# How long a settlement (a request's end) waits for the tenant's next admission on this replica to carry it in its
# own script call, before it is sent on its own: one round trip per request under load, not two (measured: a
# settlement sent on its own cost the wrapper ~40 µs of write system call and its reply at c=8, and ~100 µs per
# request with 11 counters), for ~10 µs more of Redis work in the admission that carries it.
SETTLE_DELAY = 0.002


class RedisLimits:
    """Admission and settlement on Redis. A settlement (a request's end: its slot given back, its tokens and cost
    set to what was used) is queued, not a round trip of the request's own: the tenant's next admission on this
    replica carries it in its own script call (applied before that admission is judged), or it goes out when
    `settle_delay` is up, with every other then waiting (one call per tenant). `settle_delay=None` sends each at
    once, for the caller to wait for (tests that read it back)."""

    shared = True  # replicas and LiteLLM reach the same counters

    def __init__(self, redis: RedisLink, lease_seconds: float = 900.0, window_ms: int = WINDOW_MS,
                 settle_delay: float | None = SETTLE_DELAY, timeout: float = 0.25) -> None:
        self.redis = redis
        self.timeout = timeout  # Redis not answering by then is down, for this call: TimeoutError
        self.lease_ms = int(lease_seconds * 1000)  # a lease outlives any request; a dead replica's expire
        self.window_ms = window_ms
        self.settle_delay = settle_delay
        self._waiting: dict[str, list[tuple[str, list]]] = {}  # tenant's hash tag -> (key, its four arguments)
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()

    async def admit(self, member: str, charges: list[Charge]) -> Admission:
        return await self.start_admit(member, charges)

    def start_admit(self, member: str, charges: list[Charge]) -> Awaitable[Admission]:
        """`admit`, its script sent at once (when connected): the caller may work while Redis decides, then awaits."""
        if not charges:
            return _admitted(charges, None)
        carried = self._waiting.pop(_tag(charges[0].key), [])
        keys = [key for key, _ in carried]
        args: list = [member, len(carried), *(arg for _, four in carried for arg in four)]
        windows: dict[str, list[Charge | None]] = {}  # scope -> its requests' and tokens' charges: one log
        for charge in charges:
            if charge.kind in WINDOW_KINDS:
                windows.setdefault(_scope_of(charge.key), [None, None])[charge.kind is Kind.tokens] = charge
        answered = []  # the charges in the order the script answers them
        for charge in charges:
            if charge.kind not in WINDOW_KINDS:
                keys.append(charge.key)
                args += [charge.kind.value, charge.limit, -1, charge.amount, self.lease_ms]
                answered.append(charge)
            elif (scope := _scope_of(charge.key)) in windows:
                requests, tokens = windows.pop(scope)
                keys.append(scope + ":window")
                args += ["window", requests.limit if requests else -1, tokens.limit if tokens else -1,
                         tokens.amount if tokens else 0, self.window_ms]
                answered += [c for c in (requests, tokens) if c is not None]
        return _admitted(answered, self.redis.start(ADMIT, keys, args, self.timeout))

    async def used(self, counters: list[tuple[str, Kind]]) -> list[int]:
        """What each counter holds now (requests, tokens, slots or micro-dollars of the current period)."""
        if not counters:
            return []
        keys = [_scope_of(key) + ":window" if kind in WINDOW_KINDS else key for key, kind in counters]
        args = [arg for _, kind in counters for arg in (kind.value, self.window_ms)]
        return [int(value) for value in await self.redis.run(USED, keys, args)]

    async def keys_like(self, pattern: str) -> list[str]:
        """The counters' keys matching a glob pattern (SCAN: never blocks Redis the way KEYS would); a pattern of
        requests' or tokens' keys finds their scopes' windows."""
        scope, _, kind = pattern.rpartition(":")
        window = kind in (Kind.requests.value, Kind.tokens.value)
        cursor, found = b"0", set()
        while True:
            cursor, keys = await self.redis.call("SCAN", cursor, "MATCH", f"{scope}:window" if window else pattern,
                                                 "COUNT", 1000)
            found.update(f"{_scope_of(key.decode())}:{kind}" if window else key.decode() for key in keys)
            if cursor == b"0":
                return sorted(found)

    async def settle(self, member: str, charge: Charge, used: int, admission: Admission) -> None:
        """A window's entry set to `used`; a budget's period given `used - reserved` more (it may be negative)."""
        if (sent := self.settle_all(member, [(charge, used)], admission)) is not None:
            await sent

    async def release(self, member: str, charge: Charge) -> None:
        if (sent := self.settle_all(member, [(charge, 0)], Admission(True))) is not None:
            await sent

    def settle_all(self, member: str, used: list[tuple[Charge, int]], admission: Admission) -> Awaitable[None] | None:
        """Every charge of a request settled (windows and budgets) or released (leases): queued (None), or with
        `settle_delay=None` sent at once (its sending, to await). Never raises: a settlement that cannot be sent is
        logged, and its leases expire, its reservations stand (safe, never lost)."""
        entries = [_settlement(member, charge, amount, admission) for charge, amount in used
                   if charge.kind is not Kind.requests]  # a request counts one, whatever it used
        if not entries:
            return None
        if self.settle_delay is None:
            return self._send(entries)
        self._waiting.setdefault(_tag(entries[0][0]), []).extend(entries)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.settle_delay, self._send_waiting)
        return None

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

    def _send(self, entries: list[tuple[str, list]]) -> Awaitable[None]:
        """The settlement written now (when connected: an admission sent after it is judged after it); its reply
        awaited by the caller."""
        sent = self.redis.start(SETTLE, [key for key, _ in entries], [arg for _, four in entries for arg in four],
                                self.timeout * 4)
        return _logged(sent, len(entries))


async def _logged(sent: Awaitable[object], count: int) -> None:
    try:
        await sent
    except (RedisError, OSError, TimeoutError) as exc:  # leases expire, reservations stand: safe, never lost
        logger.error("could not settle %d counters (%s)", count, type(exc).__name__)


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


def _settlement(member: str, charge: Charge, used: int, admission: Admission) -> tuple[str, list]:
    """A charge's settlement as the scripts read it: its key, and kind, value, period and entry."""
    if charge.kind is Kind.tokens:  # its window's entry, found as admitted, set to what was used (or dropped,
        # when the admission's answer was never read: no time)
        return _scope_of(charge.key) + ":window", ["window", used, admission.at_ms or "", f"{member}:{charge.amount}"]
    if charge.kind in BUDGET_KINDS:
        return charge.key, [charge.kind.value, used - charge.amount, admission.periods.get(charge.key, ""), member]
    return charge.key, [charge.kind.value, used, "", member]


def _scope_of(key: str) -> str:
    """A counter's key without its kind: `gw:lim:{tenant}:endpoint:app:tokens` -> `gw:lim:{tenant}:endpoint:app`."""
    return key.rpartition(":")[0]


def _tag(key: str) -> str:
    """A key's hash tag (`{tenant}`): keys of one script call share it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start:end + 1] if start >= 0 and end > start else key
