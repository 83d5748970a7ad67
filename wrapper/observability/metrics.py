"""Prometheus metrics, taken from the same facts as each request's audit record.

Labels are tenant, endpoint, model (as requested, once allowed) and status:
bounded by the config, whatever clients send. Per-user series are optional
(GATEWAY_METRICS_USERS = how many distinct users to label; the rest count as
`_other`), because one series per user would grow without limit.

`GET /metrics` answers a bearer of GATEWAY_METRICS_TOKEN; with no token set, only
loopback clients: tenant names and spend are not for every caller of the gateway.
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from wrapper.auth.principal import forbidden

OTHER_USERS = "_other"
_LABELS = ("tenant", "endpoint", "model")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _model_label(record: dict) -> str:
    """The model asked for, once it is known to be one the tenant may use (answered, or LiteLLM routed it).

    A refused request's model is whatever the client typed: as a label it would let anyone grow the series.
    """
    if record.get("model") and (record["status"] < 400 or record.get("tier")):
        return record["model"]
    return ""


class GatewayMetrics:
    def __init__(self, users_labelled: int = 0) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "Requests, by tenant, endpoint, model and status.",
                                [*_LABELS, "status"], registry=registry)
        self.latency = Histogram("gateway_request_duration_seconds", "Time from arrival to the answer's end.",
                                 _LABELS, buckets=_LATENCY_BUCKETS, registry=registry)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Streams: time from arrival to the first token.",
                              _LABELS, buckets=_LATENCY_BUCKETS, registry=registry)
        self.tokens = Counter("gateway_tokens", "Tokens, by direction (in: prompt, out: completion).",
                              [*_LABELS, "direction"], registry=registry)
        self.cost = Counter("gateway_cost_usd", "Spend in US dollars, as LiteLLM priced it.", _LABELS, registry=registry)
        self.decisions = Counter("gateway_policy_decisions", "What each pipeline step did (mode enforce) or would have "
                                 "done (mode shadow), by tenant, endpoint, step, mode and decision.",
                                 ["tenant", "endpoint", "step", "mode", "decision"], registry=registry)
        self.admissions = Counter("gateway_limit_decisions", "Admission (rate limits, concurrency, budgets): admitted, "
                                  "refused by which limit, or the store unavailable; by tenant, endpoint and mode.",
                                  ["tenant", "endpoint", "mode", "decision", "limit"], registry=registry)
        self.budget_used = Gauge("gateway_budget_used_usd", "A budget's use (spent and reserved) at the last "
                                 "admission, by tenant, scope (tenant or endpoint:E) and kind (usd_day, usd_month).",
                                 ["tenant", "scope", "kind"], registry=registry)
        self.budget_limit = Gauge("gateway_budget_limit_usd", "A budget's limit, as gateway_budget_used_usd.",
                                  ["tenant", "scope", "kind"], registry=registry)
        self.budget_warnings = Counter("gateway_budget_warnings", "Answers that carried a budget warning (use past "
                                       "warn_at_percent).", ["tenant", "endpoint"], registry=registry)
        self.attempts = Counter("gateway_upstream_attempts", "LiteLLM's calls for answered and failed requests: the "
                                "first, and extra (retries and fallbacks, as LiteLLM reports them), by tenant, "
                                "endpoint and the model group that answered.",
                                ["tenant", "endpoint", "group", "attempt"], registry=registry)
        self.cache = Counter("gateway_cache_lookups", "Cache lookups (wrapper/cache) by tenant, endpoint, result "
                             "(hit, would_hit in shadow, miss, skip) and layer.",
                             ["tenant", "endpoint", "result", "layer"], registry=registry)
        self.cache_saved = Counter("gateway_cache_saved_usd", "What cache hits saved: the stored answers' cost.",
                                   ["tenant", "endpoint", "layer"], registry=registry)
        self.guardrails = Counter("gateway_guardrail_findings", "What the guardrails found (wrapper/guardrails), by "
                                  "tenant, endpoint, stage (input, output), check, mode and action.",
                                  ["tenant", "endpoint", "stage", "check", "mode", "action"], registry=registry)
        self.users_labelled = users_labelled
        self._children: dict[tuple, object] = {}  # (metric, labels) -> its series: labels() locks and checks each call
        self._users: set[tuple[str, str]] = set()
        if users_labelled:
            self.user_requests = Counter("gateway_user_requests", "Model calls per user (bounded).",
                                         ["tenant", "user"], registry=registry)
            self.user_cost = Counter("gateway_user_cost_usd", "Spend per user (bounded).", ["tenant", "user"],
                                     registry=registry)

    def observe(self, record: dict) -> None:
        """Count one request from its audit record."""
        labels = (record["tenant"], record.get("endpoint") or "", _model_label(record))
        series = self._series
        series(self.requests, *labels, str(record["status"])).inc()
        series(self.latency, *labels).observe(record["latency_ms"] / 1000)
        if record.get("ttft_ms") is not None:
            series(self.ttft, *labels).observe(record["ttft_ms"] / 1000)
        for direction, field in (("in", "tokens_in"), ("out", "tokens_out")):
            if record.get(field):
                series(self.tokens, *labels, direction).inc(record[field])
        if record.get("cost"):
            series(self.cost, *labels).inc(record["cost"])
        if record.get("tier"):  # LiteLLM answered for a model group (a configured name: bounded)
            series(self.attempts, labels[0], labels[1], record["tier"], "first").inc()
            if (record.get("attempts") or 1) > 1:
                series(self.attempts, labels[0], labels[1], record["tier"], "extra").inc(record["attempts"] - 1)
        for decision in record.get("decisions") or ():  # steps and their words are the gateway's: bounded labels
            series(self.decisions, labels[0], labels[1], decision["step"], decision["mode"], decision["decision"]).inc()
            if decision["step"] == "admit":
                self._admission(labels[0], labels[1], decision)
            elif decision["step"] == "cache":
                layer = decision.get("layer") or ""
                series(self.cache, labels[0], labels[1], decision["decision"], layer).inc()
                if decision.get("saved_usd"):
                    series(self.cache_saved, labels[0], labels[1], layer).inc(decision["saved_usd"])
        for found in record.get("guardrails") or ():  # check names are the config's: bounded labels
            series(self.guardrails, labels[0], labels[1], found["stage"], found["check"], found["mode"],
                   found["action"]).inc(found["count"])
        if self.users_labelled and record.get("model") and record.get("user"):
            user = self._bounded_user(record["tenant"], record["user"])
            self.user_requests.labels(record["tenant"], user).inc()
            if record.get("cost"):
                self.user_cost.labels(record["tenant"], user).inc(record["cost"])

    def _admission(self, tenant: str, endpoint: str, decision: dict) -> None:
        series = self._series
        series(self.admissions, tenant, endpoint, decision["mode"], decision["decision"],
               decision.get("limit", "")).inc()
        for budget in decision.get("budgets") or ():
            if budget["scope"].startswith(("tenant", "endpoint:")):  # per user or key: unbounded, the record has them
                series(self.budget_used, tenant, budget["scope"], budget["kind"]).set(budget["used_usd"])
                series(self.budget_limit, tenant, budget["scope"], budget["kind"]).set(budget["limit_usd"])
        if decision.get("budget_warning"):
            series(self.budget_warnings, tenant, endpoint).inc()

    def _series(self, metric, *labels: str):
        """The metric's series for these labels (bounded by the config, so is this cache)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _bounded_user(self, tenant: str, user: str) -> str:
        key = (tenant, user)
        if key in self._users:
            return user
        if len(self._users) < self.users_labelled:
            self._users.add(key)
            return user
        return OTHER_USERS

    def scrape(self, request: Request, token: str | None) -> Response:
        presented = request.headers.get("authorization", "")
        if token:
            if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
                raise forbidden("Metrics need the bearer token set in GATEWAY_METRICS_TOKEN.", "metrics_not_allowed")
        elif (request.client.host if request.client else None) not in _LOOPBACK:
            raise forbidden("Metrics are served to loopback only until GATEWAY_METRICS_TOKEN is set.",
                            "metrics_not_allowed")
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
