"""What a request takes from each limit that applies to it, and what the store answers.

Semantics, the same in Redis and in process:
- requests and tokens: a sliding window (60 s): an exact log of what was admitted in the last window, so at most
  `limit` is admitted in any window of that length; no boundary burst, and a refusal says when enough will have
  left the window for this request to fit (`retry_after`). Tokens are reserved up front and settled to what was
  really used (`settle`); a settled amount counts from when the request was admitted.
- concurrency: leases with a time to live, released when the request ends however it ends; a replica that dies
  leaves leases that expire, so its slots heal by themselves.
- USD budgets per calendar day and month (UTC): reserved up front and settled to the real cost. Amounts are kept
  in micro-dollars (integers): no float drift in a counter that adds millions of small costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    requests = "requests"
    tokens = "tokens"
    concurrency = "concurrency"
    usd_day = "usd_day"
    usd_month = "usd_month"


WINDOW_KINDS = frozenset({Kind.requests, Kind.tokens})
BUDGET_KINDS = frozenset({Kind.usd_day, Kind.usd_month})
WINDOW_MS = 60_000
MICRO = 1_000_000  # micro-dollars per dollar


def micro_usd(usd: float) -> int:
    """Dollars as whole micro-dollars, rounded up: a reservation never comes out below the cost."""
    return math.ceil(round(usd * MICRO, 6))


@dataclass(frozen=True)
class Charge:
    key: str  # the counter: its scope (tenant, endpoint, user, key) and kind; keys of one tenant share a prefix
    kind: Kind
    limit: int  # requests, tokens, slots, or micro-dollars
    amount: int  # what this request takes from it


@dataclass
class Admission:
    admitted: bool
    refused: Charge | None = None  # the first limit that refused
    retry_after: float = 0.0  # seconds until this request would be admitted (the window's or period's truth)
    remaining: dict[str, int] = field(default_factory=dict)  # key -> what is left after this request
    periods: dict[str, str] = field(default_factory=dict)  # budget key -> the period it was charged to (to settle)
    resets: dict[str, float] = field(default_factory=dict)  # key -> seconds until some of it is free again (windows:
    # the oldest entry leaves; budgets: the period ends; concurrency: 0, a slot frees when a request ends)
    at_ms: int = 0  # when it was admitted or refused, on the store's clock (ms since the epoch)

