"""Prometheus metrics after real requests through the stack: samples and their labels."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import COST_EACH


def scrape(stack) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{stack.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def sample(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_latency_tokens_and_cost_are_counted_by_tenant_endpoint_model_and_status(stack):
    before = scrape(stack)
    for _ in range(3):
        assert httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth_for("acme-support"), timeout=30,
                          json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth_for("globex-app"), timeout=30,
                      json={"model": "boom", "messages": [{"role": "user", "content": "hi"}]}).status_code == 403
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers=stack.auth_for("acme-support"), timeout=30,
                      json={"model": "paced", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
        assert r.status_code == 200 and list(r.iter_lines())
    after = scrape(stack)

    def grew(name: str, **labels) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    acme = {"tenant": "acme", "endpoint": "support", "model": "fake-chat"}
    assert grew("gateway_requests_total", **acme, status="200") == 3
    assert grew("gateway_request_duration_seconds_count", **acme) == 3
    assert grew("gateway_tokens_total", **acme, direction="in") == 33
    assert grew("gateway_tokens_total", **acme, direction="out") == 21
    assert grew("gateway_cost_usd_total", **acme) == pytest.approx(3 * COST_EACH)
    # A refused request's model is whatever the client typed: it is not a label (anyone could grow the series).
    assert grew("gateway_requests_total", tenant="globex", endpoint="", model="", status="403") == 1
    assert not any(name == "gateway_requests_total" and ("model", "boom") in labels and ("tenant", "globex") in labels
                   for name, labels in after)  # (vandelay may use boom: its series are its own)
    paced = {"tenant": "acme", "endpoint": "support", "model": "paced"}
    assert grew("gateway_time_to_first_token_seconds_count", **paced) == 1
    assert grew("gateway_cost_usd_total", **paced) == pytest.approx(COST_EACH)


def test_metrics_are_not_for_every_caller(stack):
    # Tests reach the stack over loopback, which is allowed when no token is set; the rule itself:
    from starlette.requests import Request

    from wrapper.errors import GatewayError
    from wrapper.observability.metrics import GatewayMetrics

    def request(host: str, authorization: str = "") -> Request:
        headers = [(b"authorization", authorization.encode())] if authorization else []
        return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": headers, "client": (host, 5000)})

    metrics = GatewayMetrics()
    assert metrics.scrape(request("127.0.0.1"), None).status_code == 200
    for host, token, presented in (("10.0.0.7", None, ""), ("10.0.0.7", "s3cret", "Bearer wrong"), ("127.0.0.1", "s3cret", "")):
        with pytest.raises(GatewayError) as refused:
            metrics.scrape(request(host, presented), token)
        assert refused.value.status == 403
    assert metrics.scrape(request("10.0.0.7", "Bearer s3cret"), "s3cret").status_code == 200


def test_per_user_series_are_bounded():
    from wrapper.observability.metrics import OTHER_USERS, GatewayMetrics

    metrics = GatewayMetrics(users_labelled=2)
    for user in ("ann", "bob", "cy", "dee", "ann"):
        metrics.observe({"tenant": "acme", "endpoint": None, "model": "m", "status": 200, "latency_ms": 5,
                         "user": user, "cost": 1.0, "tokens_in": 1, "tokens_out": 1})
    values = {s.labels["user"]: s.value for f in metrics.registry.collect() if f.name == "gateway_user_requests"
              for s in f.samples if s.name.endswith("_total")}
    assert values == {"ann": 2, "bob": 1, OTHER_USERS: 2}


def test_the_grafana_dashboard_asks_only_for_metrics_the_wrapper_exports(stack):
    """helm/dashboards/llm-gateway.json: every series its queries name exists in a real scrape."""
    import json
    import re
    from pathlib import Path

    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers=stack.auth, timeout=30,  # a TTFT sample
                      json={"model": "paced", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
        assert r.status_code == 200 and list(r.iter_lines())
    for endpoint in ("frugal", "burst"):  # a budget's use, and admission decisions
        httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth_for(f"cyberdyne-{endpoint}"), timeout=30,
                   json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    for _ in range(2):  # a cache miss, then a hit with its saving
        httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth_for("wonka-cached"), timeout=30,
                   json={"model": "fake-chat", "temperature": 0, "messages": [{"role": "user", "content": "dash"}]})
        time.sleep(0.2)
    dashboard = json.loads((Path(__file__).parents[2] / "helm" / "dashboards" / "llm-gateway.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = {name for expr in exprs for name in re.findall(r"\b(gateway_[a-z_]+)\b", expr)}
    scraped = {name for name, _ in scrape(stack)}
    assert named and named <= scraped, named - scraped
    assert {"gateway_cost_usd_total", "gateway_request_duration_seconds_bucket",
            "gateway_time_to_first_token_seconds_bucket", "gateway_budget_used_usd",
            "gateway_limit_decisions_total", "gateway_policy_decisions_total",
            "gateway_upstream_attempts_total", "gateway_cache_saved_usd_total"} <= named  # spend, latency, TTFT, budgets, refusals, routes, retries
