"""Bad input gets a clear 400; upstream trouble gets 429/502/503/504; always the OpenAI envelope."""

from __future__ import annotations

import httpx
import pytest

from tests.support.http import post as support_post
from tests.support.processes import free_port
from tests.support.wrapper import start_wrapper, write_tenants


def post(stack, body, path="/v1/chat/completions") -> httpx.Response:
    return support_post(stack, "acme-app", body, path)


def assert_envelope(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and "type" in error and "code" in error
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"]
    return error


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "fake-chat"}, "messages"),
        ({"model": "fake-chat", "messages": []}, "messages"),
        ({"model": 42, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "fake-chat", "messages": ["hi"]}, "messages[0]"),
        ({"model": "fake-chat", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ],
)
def test_bad_chat_requests_get_a_400_naming_the_field(stack, fake_provider, body, param):
    before = len(fake_provider.log())
    error = assert_envelope(post(stack, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert len(fake_provider.log()) == before  # nothing reached the provider


def test_bad_embeddings_request(stack):
    error = assert_envelope(post(stack, {"model": "fake-embed"}, "/v1/embeddings"), 400)
    assert error["param"] == "input"


def test_oversized_body_gets_413(stack):
    huge = b'{"model": "fake-chat", "messages": [{"role": "user", "content": "' + b"x" * (21 * 1024 * 1024) + b'"}]}'
    assert_envelope(post(stack, huge), 413)


def test_unknown_route_gets_404_envelope(stack):
    assert_envelope(httpx.get(f"{stack.url}/v1/nothing-here"), 404)


@pytest.mark.parametrize(
    "model, status, code",
    [
        ("boom", 502, "upstream_error"),  # provider 500
        ("busy", 503, "upstream_unavailable"),  # provider 503
        ("refuses", 400, "400"),  # provider 400: the client's mistake, passed on
        ("stuck", 504, "upstream_timeout"),  # provider hangs past the model's timeout
    ],
)
def test_provider_failures_map_to_gateway_statuses(stack, model, status, code):
    error = assert_envelope(post(stack, {"model": model, "messages": [{"role": "user", "content": "hi"}]}), status)
    assert error["code"] == code


def test_provider_rate_limit_passes_on_429_with_retry_after(stack):
    response = post(stack, {"model": "limited", "messages": [{"role": "user", "content": "hi"}]})
    assert_envelope(response, 429)
    assert response.headers["retry-after"] == "7"


def test_provider_failure_before_a_stream_starts_is_a_status_not_a_stream(stack):
    response = post(stack, {"model": "boom", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert_envelope(response, 502)


def test_provider_dropping_a_stream_midway_is_not_reported_as_complete(stack):
    body = {"model": "drops", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, headers=stack.auth, timeout=30) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert "data: [DONE]" not in events
    assert '"error"' in events[-1]


def test_unreachable_litellm_gives_503_and_retry_after(tmp_path):
    config = tmp_path / "gateway.yaml"
    keys = write_tenants(config, {"solo": {"models": ["*"]}})
    wrapper = start_wrapper(tmp_path, {"GATEWAY_CONFIG": str(config), "GATEWAY_LITELLM_PORT": str(free_port())})
    try:
        response = httpx.post(f"{wrapper.url}/v1/chat/completions", headers={"authorization": f"Bearer {keys['solo']}"},
                              json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
        assert_envelope(response, 503)
        assert response.json()["error"]["code"] == "upstream_unavailable"
        assert response.headers["retry-after"] == "1"
        assert_envelope(httpx.get(f"{wrapper.url}/readyz"), 503)
    finally:
        wrapper.stop()


def test_with_litellm_unreachable_a_request_admission_refuses_still_gets_its_429(tmp_path):
    """The pipeline's promise: admission's refusal comes before anything later can fail. With LiteLLM down, the
    connection fails while Redis (or the in-process store) decides; the refusal must still win, as the 429 the
    client can act on (Retry-After), not a 503 that says to come back in a second."""
    config = tmp_path / "gateway.yaml"
    keys = write_tenants(config, {"solo": {"models": ["*"], "limits": {"mode": "enforce", "requests_per_minute": 1}}})
    wrapper = start_wrapper(tmp_path, {"GATEWAY_CONFIG": str(config), "GATEWAY_LITELLM_PORT": str(free_port())})
    try:
        def ask() -> httpx.Response:
            return httpx.post(f"{wrapper.url}/v1/chat/completions", headers={"authorization": f"Bearer {keys['solo']}"},
                              json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})

        first = ask()  # admitted: the one request a minute, then LiteLLM cannot be reached
        assert_envelope(first, 503)
        assert first.json()["error"]["code"] == "upstream_unavailable"
        second = ask()  # over the limit: refused before LiteLLM's absence matters
        assert_envelope(second, 429)
        assert second.json()["error"]["code"] == "rate_limit_requests"
        assert 1 <= int(second.headers["retry-after"]) <= 60
    finally:
        wrapper.stop()


def test_a_client_that_leaves_mid_body_is_recorded_as_gone_not_as_a_gateway_error(stack):
    """Found under load (bench/limits_proof.py): a body cut short was logged as an unexpected error, answered 500."""
    import socket
    import time
    import uuid
    from urllib.parse import urlsplit

    from tests.support.audit_db import the_record

    request_id = uuid.uuid4().hex
    where = urlsplit(stack.url)
    with socket.create_connection((where.hostname, where.port)) as connection:
        connection.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
                            f"Authorization: {stack.auth['authorization']}\r\nContent-Type: application/json\r\n"
                            f"Content-Length: 1000\r\nx-request-id: {request_id}\r\n\r\n" + '{"model": "fake').encode())
        time.sleep(0.3)
    record = the_record(stack.database_url, request_id, wait_seconds=10)
    assert record["status"] == 499 and record["outcome"] != "error", record
    assert not [line for line in stack.log.read_text().splitlines() if request_id in line and "unexpected" in line]
