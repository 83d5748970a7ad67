"""Each model group's recent answers (wrapper/routing/health.py): states, and the five-minute window."""

from __future__ import annotations

from wrapper.routing.health import ModelHealth


def record(group: str | None, status: int, latency: float = 10.0, ttft: float | None = None) -> dict:
    return {"tier": group, "status": status, "latency_ms": latency, "ttft_ms": ttft, "model": "typed-by-a-client"}


def test_a_group_that_keeps_failing_is_failing_and_one_that_answers_is_ok():
    now = [0.0]
    health = ModelHealth(clock=lambda: now[0])
    for _ in range(5):
        health.observe(record("dear", 502))
        health.observe(record("cheap", 200, latency=20.0, ttft=5.0))
    health.observe(record("cheap", 429))
    health.observe(record(None, 503))  # never reached LiteLLM (limits unavailable): no group's health
    groups = {g["model_group"]: g for g in health.snapshot()}
    assert set(groups) == {"dear", "cheap"}
    assert groups["dear"]["state"] == "failing" and groups["dear"]["errors_5xx"] == 5
    assert groups["cheap"] == {"model_group": "cheap", "requests": 6, "errors_5xx": 0, "rate_limited": 1,
                               "error_ratio": 0.0, "latency_p50_ms": 20.0, "ttft_p50_ms": 5.0, "state": "ok"}
    health.observe(record("cheap", 500))
    assert {g["model_group"]: g["state"] for g in health.snapshot()}["cheap"] == "degraded"  # 1 in 7
    now[0] = 301.0  # five minutes on, all of it has left the window
    assert health.snapshot() == []
