"""Streams are forwarded as the provider paces them, and stop at the provider when the client leaves."""

from __future__ import annotations

import time
import uuid

import httpx


def test_chunks_reach_the_client_with_the_providers_pacing(openai_client, fake_provider):
    # Warm the connection pools first, so the measured stream is about forwarding, not connecting.
    openai_client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "warm"}])
    marker = uuid.uuid4().hex
    stream = openai_client.chat.completions.create(
        model="paced", messages=[{"role": "user", "content": marker}], stream=True
    )
    arrivals = [time.monotonic() for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    [sent] = fake_provider.requests_containing(marker)
    provider_times = sent["chunk_times"]

    assert len(arrivals) == len(provider_times) == 5
    # Each chunk reaches the client after the provider sent it and before it sent the next one (50 ms later), so
    # nothing is held back. The figure itself (how soon) is the bench's (bench/overhead.py): on 2 shared cores a
    # test can only bound it loosely.
    for index, arrived in enumerate(arrivals[:-1]):
        assert provider_times[index] <= arrived < provider_times[index + 1] + 0.04, (index, arrivals, provider_times)


def test_client_disconnect_mid_stream_closes_the_provider_connection(stack, fake_provider):
    marker = uuid.uuid4().hex
    body = {"model": "long-stream", "stream": True, "messages": [{"role": "user", "content": marker}]}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{stack.url}/v1/chat/completions", json=body, headers=stack.auth) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # one event, then walk away
    left_at = time.monotonic()

    deadline = left_at + 5
    while time.monotonic() < deadline:
        [record] = fake_provider.requests_containing(marker)
        if record["caller_disconnected"]:
            break
        time.sleep(0.05)
    assert record["caller_disconnected"], record
    # 40 chunks at 100 ms would take 4 s; the provider stopped within a few chunks of the client leaving.
    assert len(record["chunk_times"]) < 10
    assert record["finished_at"] - left_at < 1.0
