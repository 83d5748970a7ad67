"""OpenTelemetry: the wrapper's steps as spans of the client's trace, and the trace passed on to LiteLLM.

The wrapper runs alone in front of the fake provider (standing in for LiteLLM,
so the headers the wrapper sends upstream are recorded), exporting to a local
OTLP stand-in (tests/otlp_stub.py).
"""

from __future__ import annotations

import logging
import time
import uuid

import httpx
import pytest

from tests.support.processes import write_litellm_config
from tests.support.wrapper import start_wrapper, write_tenants

STEPS = {"gateway.request", "authenticate", "route", "litellm", "audit.commit"}  # pii is off: not run


def test_a_request_is_a_trace_of_its_steps_continued_upstream(tmp_path, fake_provider, langfuse):
    config = tmp_path / "gateway.yaml"
    key = write_tenants(config, {"solo": {"models": ["fake-chat"]}})["solo"]
    models = write_litellm_config(tmp_path / "litellm_config.yaml", fake_provider.url, {"fake-chat": {}})
    env = {"GATEWAY_LITELLM_PORT": fake_provider.url.rsplit(":", 1)[1], "GATEWAY_LITELLM_CONFIG": str(models),
           "GATEWAY_CONFIG": str(config), "OTEL_EXPORTER_OTLP_ENDPOINT": langfuse.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    wrapper = start_wrapper(tmp_path, env)
    trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    try:
        response = httpx.post(f"{wrapper.url}/v1/chat/completions", timeout=30,
                              headers={"authorization": f"Bearer {key}", "x-request-id": request_id,
                                       "traceparent": f"00-{trace_id}-{client_span}-01"},
                              json={"model": "fake-chat", "messages": [{"role": "user", "content": request_id}]})
        assert response.status_code == 200, response.text
        deadline, spans = time.monotonic() + 10, []
        while time.monotonic() < deadline and not STEPS <= {s["name"] for s in spans}:
            spans = [s for s in langfuse.spans() if s["trace_id"] == trace_id]
            time.sleep(0.1)
    finally:
        wrapper.stop()  # which flushes whatever spans were still queued
    spans = [s for s in langfuse.spans() if s["trace_id"] == trace_id]
    # One span per step and none besides: FastAPI's own request and dependency spans are off (wrapper/app.py).
    assert sorted(s["name"] for s in spans) == sorted(STEPS)
    by_name = {s["name"]: s for s in spans}
    root = by_name["gateway.request"]
    assert root["parent_span_id"] == client_span  # the client's trace, continued
    assert root["attributes"]["gateway.request_id"] == request_id
    assert root["attributes"]["http.response.status_code"] == 200
    ids = {s["span_id"] for s in spans}
    assert all(s["parent_span_id"] in ids | {client_span} for s in spans)  # one tree, under the client's span
    # What went upstream carries the trace on, as a child of the `litellm` step.
    sent = fake_provider.requests_containing(request_id)[0]["headers"]
    assert sent["traceparent"] == f"00-{trace_id}-{by_name['litellm']['span_id']}-01"


@pytest.mark.parametrize("traced", [True, False])
def test_log_lines_carry_the_trace_id_when_tracing_is_on(monkeypatch, traced):
    from opentelemetry.sdk.trace import TracerProvider

    from wrapper.observability import tracing
    from wrapper.observability.logs import JsonFormatter

    monkeypatch.setattr(tracing, "_enabled", traced)  # as configure_tracing() sets it when an endpoint is configured
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        line = JsonFormatter().format(logging.LogRecord("wrapper", logging.INFO, __file__, 1, "hello", None, None))
    trace_id = f'"trace_id":"{format(span.get_span_context().trace_id, "032x")}"'
    assert (trace_id in line) is traced  # off, nothing of OpenTelemetry runs on a request
