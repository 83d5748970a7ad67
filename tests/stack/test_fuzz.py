"""Property-based fuzzing of the real stack: no body and no query makes it answer 500, hang, or leave the envelope.

3,000 generated bodies per model route (from the published request schema, made hostile: tests/fuzz_bodies.py) and
2,000 queries to the audit and cost APIs, sent in concurrent batches. bench/fuzz.py runs the same for longer.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.fuzz_bodies import hostile_bodies, hostile_queries
from wrapper.routes.chat import CHAT
from wrapper.routes.completions import COMPLETIONS
from wrapper.routes.embeddings import EMBEDDINGS
from wrapper.routes.messages import MESSAGES
from wrapper.routes.responses import RESPONSES

BODIES_PER_ROUTE = int(os.environ.get("GATEWAY_FUZZ_BODIES", 3000))
QUERIES = int(os.environ.get("GATEWAY_FUZZ_QUERIES", 2000))
BATCH = 20  # sent at once: hypothesis draws one batch per example
TIMEOUT = int(os.environ.get("GATEWAY_FUZZ_TIMEOUT", 600))  # seconds per test (bench/fuzz.py runs far longer)
def fuzz(examples: int) -> settings:
    # no shrinking: it took over 5 minutes on a failing batch of the live stack; the failing batch is printed whole
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                    print_blob=True, phases=(Phase.explicit, Phase.reuse, Phase.generate))
REPORT = os.environ.get("GATEWAY_FUZZ_REPORT")  # a JSON file for bench/fuzz.py: statuses and seconds per target
STATUSES: dict[str, Counter] = {}
SECONDS: dict[str, float] = {}


def assert_answered_well(target: str, response: httpx.Response) -> None:
    STATUSES.setdefault(target, Counter())[response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and error["type"] and "code" in error, error
        assert "Traceback" not in response.text


class Clients:
    """One httpx client per sending thread: a client's connection pool is not to be shared between threads."""

    def __init__(self, url: str) -> None:
        self.url, self._local, self._all = url, threading.local(), []

    def __getattr__(self, method: str):
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(base_url=self.url, timeout=30)
            self._all.append(self._local.client)
        return getattr(self._local.client, method)

    def close(self) -> None:
        for client in self._all:
            client.close()


@pytest.fixture(scope="module")
def client(stack, fake_provider):
    clients = Clients(stack.url)
    with ThreadPoolExecutor(8) as pool:
        yield clients, pool
    clients.close()
    httpx.delete(f"{fake_provider.url}/_fake/log")  # thousands of entries would slow every later test's log reads
    if REPORT:
        with open(REPORT, "w") as out:
            json.dump({target: {"statuses": dict(STATUSES[target]), "seconds": SECONDS.get(target)}
                       for target in STATUSES}, out)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("path, shape", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETIONS),
                                         ("/v1/embeddings", EMBEDDINGS), ("/v1/responses", RESPONSES),
                                         ("/v1/messages", MESSAGES)],
                         ids=["chat", "completions", "embeddings", "responses", "messages"])
def test_no_body_makes_a_model_route_fail_badly(stack, client, path, shape):
    http, pool = client
    # A tenant of its own takes the fuzz's records, so the audit queries below read logs of ordinary size.
    headers = {**stack.auth_for("fuzzed-app"), "content-type": "application/json"}
    started = time.monotonic()

    @fuzz(BODIES_PER_ROUTE // BATCH)
    @given(st.lists(hostile_bodies(shape.schema()), min_size=BATCH, max_size=BATCH))
    def batch(bodies: list[bytes]) -> None:
        for response in pool.map(lambda body: http.post(path, content=body, headers=headers), bodies):
            assert_answered_well(path, response)

    batch()
    SECONDS[path] = time.monotonic() - started
    assert sum(STATUSES[path].values()) >= BODIES_PER_ROUTE
    assert STATUSES[path][200] and STATUSES[path][400]  # bodies both served and refused: the fuzz reached both
    assert httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200


@pytest.mark.timeout(TIMEOUT)
def test_no_query_makes_the_audit_or_cost_api_fail_badly(stack, client):
    http, pool = client
    keys = st.sampled_from(["admin", "acme-auditor", "acme-finance", "acme-app"])
    started = time.monotonic()

    @fuzz(QUERIES // BATCH)
    @given(st.lists(st.tuples(hostile_queries(), keys), min_size=BATCH, max_size=BATCH))
    def batch(queries) -> None:
        calls = [((path, params), stack.auth_for(key)) for (path, params), key in queries]
        for response in pool.map(lambda call: http.get(call[0][0], params=call[0][1], headers=call[1]), calls):
            assert_answered_well("audit and cost API", response)

    batch()
    SECONDS["audit and cost API"] = time.monotonic() - started
    assert sum(STATUSES["audit and cost API"].values()) >= QUERIES
    assert STATUSES["audit and cost API"][200] and STATUSES["audit and cost API"][400]
