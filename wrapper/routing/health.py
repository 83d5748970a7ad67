"""How each model group has been answering lately, as this replica saw it: `GET /v1/status/models` (admin).

LiteLLM skips a deployment that keeps failing (its cooldowns: `router_settings.allowed_fails`, `cooldown_time`);
this is what the platform team reads to see it happen. Taken from the same facts as each audit record: per model
group (the one that answered, else the one asked for), over the last five minutes, the requests, 5xx and 429
answers, median latency and time to first token, and a state: `failing` (at least 5 requests, half or more 5xx),
`degraded` (a tenth or more), else `ok`. Per replica and in memory: a restart starts it afresh.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 300.0
KEPT = 2_000  # per group: the newest answers within the window


class ModelHealth:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[str, deque[tuple[float, int, float, float | None]]] = {}

    def observe(self, record: dict) -> None:
        """One request, from its audit record (an observer of the audit middleware)."""
        group = record.get("tier")  # LiteLLM's model group: set once LiteLLM routed the request (errors too)
        if not group:
            return  # never reached LiteLLM: not a group's health
        seen = self._seen.setdefault(group, deque(maxlen=KEPT))
        seen.append((self.clock(), record["status"], record.get("latency_ms") or 0.0, record.get("ttft_ms")))

    def snapshot(self) -> list[dict]:
        cutoff = self.clock() - WINDOW_SECONDS
        groups = []
        for group, seen in sorted(self._seen.items()):
            while seen and seen[0][0] < cutoff:
                seen.popleft()
            if not seen:
                continue
            statuses = [status for _, status, _, _ in seen]
            errors = sum(status >= 500 for status in statuses)
            ratio = errors / len(statuses)
            ttfts = [ttft for *_, ttft in seen if ttft is not None]
            groups.append({
                "model_group": group, "requests": len(statuses), "errors_5xx": errors,
                "rate_limited": statuses.count(429), "error_ratio": round(ratio, 3),
                "latency_p50_ms": round(statistics.median(latency for _, _, latency, _ in seen), 1),
                "ttft_p50_ms": round(statistics.median(ttfts), 1) if ttfts else None,
                "state": "failing" if len(statuses) >= 5 and ratio >= 0.5 else "degraded" if ratio >= 0.1 else "ok",
            })
        return groups
