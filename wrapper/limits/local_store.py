"""Admission in process, for one replica (GATEWAY_REDIS_URL unset): the semantics of redis_store.py, kept in dicts.

Atomic the way the event loop makes it: `admit` has no await inside, so no other request runs between the check
of the first limit and the charge of the last. The clock is injectable, for tests.
"""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from wrapper.limits.charges import BUDGET_KINDS, WINDOW_KINDS, WINDOW_MS, Admission, Charge, Kind


def budget_period(kind: Kind, now_ms: int) -> tuple[str, int]:
    """The period a budget charge falls in, as Redis' script names it, and when it ends (ms since the epoch)."""
    day = now_ms // 86_400_000
    if kind is Kind.usd_day:
        return str(day), (day + 1) * 86_400_000
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return f"{moment.year:04d}{moment.month:02d}", int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


class LocalLimits:
    def __init__(self, lease_seconds: float = 900.0, clock: Callable[[], float] = time.time,
                 window_ms: int = WINDOW_MS) -> None:
        self.lease_ms = int(lease_seconds * 1000)
        self.window_ms = window_ms
        self.clock = clock
        self._windows: dict[str, OrderedDict[str, tuple[int, int]]] = {}  # key -> id -> (admitted at, amount)
        self._totals: dict[str, int] = {}
        self._leases: dict[str, dict[str, int]] = {}  # key -> id -> expires at
        self._budgets: dict[str, int] = {}  # key:period -> micro-dollars

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def start_admit(self, member: str, charges: list[Charge]) -> Awaitable[Admission]:
        return self.admit(member, charges)  # nothing travels: it decides when awaited

    async def admit(self, member: str, charges: list[Charge]) -> Admission:
        now = self._now()
        used, periods = {}, {}
        for charge in charges:
            key, amount, limit = charge.key, charge.amount, charge.limit
            if charge.kind in WINDOW_KINDS:
                entries = self._prune(key, now)
                used[key] = self._totals.get(key, 0)
                if used[key] + amount > limit:
                    return Admission(False, charge, self._window_retry(entries, used[key] + amount - limit, now)
                                     if amount <= limit else -1.0, at_ms=now)
            elif charge.kind is Kind.concurrency:
                leases = self._leases.setdefault(key, {})
                for lease in [lease for lease, expires in leases.items() if expires <= now]:
                    del leases[lease]
                used[key] = len(leases)
                if used[key] + amount > limit:
                    first = min(leases.values(), default=now)
                    return Admission(False, charge, min(1000, first - now) / 1000 if limit > 0 else -1.0, at_ms=now)
            else:
                period, ends = budget_period(charge.kind, now)
                periods[key] = period
                used[key] = self._budgets.get(f"{key}:{period}", 0)
                if used[key] + amount > limit:
                    return Admission(False, charge, (ends - now) / 1000 if amount <= limit else -1.0, at_ms=now)
        for charge in charges:
            key = charge.key
            if charge.kind in WINDOW_KINDS:
                self._windows.setdefault(key, OrderedDict())[member] = (now, charge.amount)
                self._totals[key] = self._totals.get(key, 0) + charge.amount
            elif charge.kind is Kind.concurrency:
                self._leases[key][member] = now + self.lease_ms
            else:
                slot = f"{key}:{periods[key]}"
                self._budgets[slot] = self._budgets.get(slot, 0) + charge.amount
        remaining = {c.key: c.limit - used[c.key] - c.amount for c in charges}
        return Admission(True, remaining=remaining, periods=periods, resets=self._resets(charges, now), at_ms=now)

    def _resets(self, charges: list[Charge], now: int) -> dict[str, float]:
        resets = {}
        for charge in charges:
            if charge.kind in WINDOW_KINDS:
                oldest = next(iter(self._windows[charge.key].values()))[0]
                resets[charge.key] = (oldest + self.window_ms - now) / 1000
            elif charge.kind in BUDGET_KINDS:
                resets[charge.key] = (budget_period(charge.kind, now)[1] - now) / 1000
            else:
                resets[charge.key] = 0.0
        return resets

    async def settle(self, member: str, charge: Charge, used: int, admission: Admission) -> None:
        self._settle(member, charge, used, admission)

    def _settle(self, member: str, charge: Charge, used: int, admission: Admission) -> None:
        if charge.kind in WINDOW_KINDS:
            entries = self._windows.get(charge.key, {})
            if member in entries:
                admitted_at, old = entries[member]
                entries[member] = (admitted_at, used)
                self._totals[charge.key] += used - old
        elif charge.kind in BUDGET_KINDS:
            slot = f"{charge.key}:{admission.periods.get(charge.key)}"
            if slot in self._budgets:
                self._budgets[slot] += used - charge.amount
        else:
            self._leases.get(charge.key, {}).pop(member, None)

    async def release(self, member: str, charge: Charge) -> None:
        self._leases.get(charge.key, {}).pop(member, None)

    def settle_all(self, member: str, used: list[tuple[Charge, int]], admission: Admission) -> None:
        """Applied at once (RedisLimits' interface: nothing to wait for)."""
        for charge, amount in used:
            self._settle(member, charge, amount, admission)

    async def used(self, counters: list[tuple[str, Kind]]) -> list[int]:
        now, answer = self._now(), []
        for key, kind in counters:
            if kind in WINDOW_KINDS:
                entries = self._windows.get(key, {}).values()
                answer.append(sum(amount for at, amount in entries if at > now - self.window_ms))
            elif kind is Kind.concurrency:
                answer.append(sum(expires > now for expires in self._leases.get(key, {}).values()))
            else:
                answer.append(self._budgets.get(f"{key}:{budget_period(kind, now)[0]}", 0))
        return answer

    async def keys_like(self, pattern: str) -> list[str]:
        keys = [*self._windows, *self._leases, *self._budgets]
        return sorted({key for key in keys if fnmatch.fnmatchcase(key, pattern)})

    def _prune(self, key: str, now: int) -> OrderedDict:
        entries = self._windows.setdefault(key, OrderedDict())
        while entries:
            member, (admitted_at, amount) = next(iter(entries.items()))
            if admitted_at > now - self.window_ms:
                break
            del entries[member]
            self._totals[key] -= amount
        return entries

    def _window_retry(self, entries: OrderedDict, need: int, now: int) -> float:
        freed = 0
        for admitted_at, amount in entries.values():
            freed += amount
            if freed >= need:
                return (admitted_at + self.window_ms - now) / 1000
        return self.window_ms / 1000
