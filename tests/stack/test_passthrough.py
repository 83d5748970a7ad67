"""Chat (plain and streamed) and embeddings through the whole stack with the official openai SDK."""

from __future__ import annotations

import uuid

import httpx


def test_chat_completion_answers_from_the_provider(openai_client, fake_provider):
    marker = uuid.uuid4().hex
    completion = openai_client.chat.completions.create(
        model="fake-echo", messages=[{"role": "user", "content": f"say {marker}"}]
    )
    assert completion.choices[0].message.content == f"say {marker}"
    assert completion.usage.prompt_tokens == 11 and completion.usage.completion_tokens == 7
    [received] = fake_provider.requests_containing(marker)
    assert received["body"]["messages"] == [{"role": "user", "content": f"say {marker}"}]
    # The wrapper's sealed metadata is for LiteLLM only; it never reaches the provider.
    assert "gateway_seal" not in str(received["body"]) and "gateway_seal" not in str(received["headers"])


def test_streamed_chat_arrives_in_chunks_with_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model="fake-chat",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps over the lazy dog."
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18


def test_embeddings(openai_client):
    result = openai_client.embeddings.create(model="fake-embed", input=["alpha", "beta"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8 and result.data[0].embedding != result.data[1].embedding


def test_a_model_outside_the_tenants_list_is_refused_before_litellm(stack, fake_provider):
    before = len(fake_provider.log())
    for model, status, code in (("globex-private", 403, "model_not_allowed"), ("no-such-model", 404, "model_not_found")):
        response = httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth,
                              json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        assert model in response.json()["error"]["message"]
    assert len(fake_provider.log()) == before  # LiteLLM was never asked


def test_request_id_is_kept_when_well_formed_and_replaced_when_not(stack):
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
    kept = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers={"x-request-id": "client-id-42", **stack.auth})
    assert kept.headers["x-request-id"] == "client-id-42"
    replaced = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers={"x-request-id": "bad id <script>", **stack.auth})
    assert replaced.status_code == 200
    assert replaced.headers["x-request-id"] != "bad id <script>" and len(replaced.headers["x-request-id"]) == 32


def test_proxied_responses_report_the_wrappers_own_time(stack):
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]},
        headers=stack.auth,
    )
    overhead = float(response.headers["x-gateway-overhead-ms"])
    assert 0 <= overhead < 1000
    # Internal LiteLLM headers (provider URL, key spend) stay inside.
    assert "x-litellm-model-api-base" not in response.headers and "x-litellm-key-spend" not in response.headers


def test_models_lists_the_configured_models(stack):
    models = httpx.get(f"{stack.url}/v1/models", headers=stack.auth).json()
    assert {"fake-chat", "paced", "fake-embed"} <= {m["id"] for m in models["data"]}


def test_health_and_readiness(stack):
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.url}/readyz").json() == {"status": "ready", "audit_store": "ok"}


def test_a_traced_request_is_served_and_its_trace_continues_into_litellm(stack):
    """The client's traceparent goes on to LiteLLM, which turns it into a trace id field of its own."""
    trace_id, logged_before = uuid.uuid4().hex, len(stack.log.read_text())
    for stream in (False, True):
        response = httpx.post(f"{stack.url}/v1/chat/completions", timeout=30,
                              json={"model": "fake-chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
                              headers={**stack.auth, "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"})
        assert response.status_code == 200, response.text
    assert "did not come through the wrapper" not in stack.log.read_text()[logged_before:]
