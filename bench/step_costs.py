"""What the always-on steps of a model call cost per call, timed in one process (µs, median of 5 runs).

Auth, the body's check, the audit record and the metrics cannot be switched off in the wrapper (they are what
it is for), so the hot-path bench (bench/hot_path.py) times them here, on the same request it sends.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.wrapper import write_tenants  # noqa: E402
from wrapper.audit.chain import chain_rows  # noqa: E402
from wrapper.audit.record import Delivery, build_record  # noqa: E402
from wrapper.auth import authenticate  # noqa: E402
from wrapper.auth.oidc import JwksCache  # noqa: E402
from wrapper.config import ConfigStore  # noqa: E402
from wrapper.context import RequestContext  # noqa: E402
from wrapper.observability.metrics import GatewayMetrics  # noqa: E402
from wrapper.request import parse  # noqa: E402
from wrapper.routes.chat import ChatRoute  # noqa: E402
from wrapper.upstream.forward import sealed_body  # noqa: E402

CHAT = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]})
ANSWER = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"Hello."},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}')


def _per_call(function, calls: int = 5000) -> float:
    runs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            function()
        runs.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(runs)


def step_costs() -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gateway.yaml"
        key = write_tenants(path, {"bench": {"models": ["*"]}})["bench"]
        store = ConfigStore(path)
        headers = {"authorization": f"Bearer {key}"}
        jwks = JwksCache()
        route = ChatRoute()
        metrics = GatewayMetrics()
        loop = asyncio.new_event_loop()

        ctx = RequestContext("0123456789abcdef0123456789abcdef", client_addr="127.0.0.1")
        config = store.current()
        ctx.principal = loop.run_until_complete(authenticate(headers, config, jwks))
        ctx.tenant = config.tenants["bench"]
        ctx.policy = ctx.tenant.policy(None)
        ctx.route, ctx.body, ctx.model_group = route, parse(CHAT, route.fields), "bench"
        ctx.decisions = [{"step": "route", "mode": "enforce", "decision": "allow"}]
        ctx.outcome.note_usage(orjson.loads(ANSWER)["usage"])
        delivery = Delivery("POST", "/v1/chat/completions", status=200, response_sha256="0" * 64, response_body=ANSWER)
        record = build_record(ctx, delivery)

        def auth() -> None:
            coroutine = authenticate(headers, store.current(), jwks)
            try:
                coroutine.send(None)
            except StopIteration:
                pass

        costs = [
            ("config in force (a stat of gateway.yaml)", _per_call(store.current)),
            ("API key authentication (config, key hash)", _per_call(auth)),
            ("body read against the chat allow-list (parse and check)", _per_call(lambda: parse(CHAT, route.fields))),
            ("the body sent to LiteLLM (sealed metadata, HMAC)", _per_call(lambda: sealed_body(ctx, b"secret"))),
            ("the audit record built (hash content policy)", _per_call(lambda: build_record(ctx, delivery))),
            ("the record's chain row (canonical JSON, SHA-256)", _per_call(lambda: chain_rows("bench", 1, "0" * 64, [record]))),
            ("metrics observed from the record", _per_call(lambda: metrics.observe(record))),
        ]
        loop.close()
        return costs


if __name__ == "__main__":
    for name, micros in step_costs():
        print(f"{name}: {micros:.1f} µs")
