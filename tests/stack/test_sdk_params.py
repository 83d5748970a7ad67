"""The official openai SDK's normal parameters still work unchanged through the allow-list, and reach the provider."""

from __future__ import annotations

import uuid

PARAMETERS = dict(
    temperature=0.3, top_p=0.9, n=1, stop=["\n\nEND"], max_tokens=64, max_completion_tokens=64, presence_penalty=0.1,
    frequency_penalty=0.2, logit_bias={"50256": -100}, logprobs=True, top_logprobs=2, seed=42,
    tools=[{"type": "function", "function": {"name": "lookup_order", "description": "Find an order by its id.",
                                             "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                                            "required": ["id"]}, "strict": True}}],
    tool_choice="auto", parallel_tool_calls=False,
    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
    user="end-user-7", metadata={"feature": "support"}, reasoning_effort="low", service_tier="auto", store=False,
    prediction={"type": "content", "content": "The order"}, safety_identifier="hashed-7", prompt_cache_key="support",
)


def test_chat_with_every_normal_parameter(openai_client, fake_provider):
    marker = uuid.uuid4().hex
    completion = openai_client.chat.completions.create(
        model="fake-chat", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": marker}],
        **PARAMETERS)
    assert completion.choices[0].message.content
    [received] = fake_provider.requests_containing(marker)
    sent = received["body"]
    for name in ("temperature", "top_p", "seed", "stop", "tools", "tool_choice", "response_format", "logit_bias"):
        assert sent[name] == PARAMETERS[name], name
    # (`user` and `metadata` reach LiteLLM, which keeps them for itself: the provider is not sent them.)


def test_streamed_chat_with_every_normal_parameter(openai_client, fake_provider):
    marker = uuid.uuid4().hex
    stream = openai_client.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": marker}], stream=True,
        stream_options={"include_usage": True}, **PARAMETERS)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    assert fake_provider.requests_containing(marker)[0]["body"]["seed"] == 42


def test_embeddings_with_every_normal_parameter(openai_client, fake_provider):
    marker = uuid.uuid4().hex
    result = openai_client.embeddings.create(model="fake-embed", input=[marker, "second"], encoding_format="float",
                                             user="end-user-7")
    assert len(result.data) == 2 and fake_provider.requests_containing(marker)


def test_a_parameter_the_model_does_not_take_is_litellms_400_passed_on(openai_client, fake_provider):
    """`dimensions` passes the allow-list; LiteLLM refuses it for this (OpenAI) deployment: the client's to fix."""
    import openai
    import pytest

    marker = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.embeddings.create(model="fake-embed", input=marker, dimensions=8)
    assert "dimensions" in refused.value.message
    assert fake_provider.requests_containing(marker) == []
