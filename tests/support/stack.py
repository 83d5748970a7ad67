"""The stack tier: a fake provider and the real stack (`gateway up`: LiteLLM + wrapper) in front of it, its tenants and keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import redis
import yaml

from tests.support.audit_db import as_superuser
from tests.support.fake_provider import Behaviour
from tests.support.identity import AUDIENCE, ISSUER, IdentityProvider, gateway_cli
from tests.support.otlp_stub import OtlpStubProcess
from tests.support.processes import BIN, free_port, start, stop, wait_until, write_litellm_config

# Behaviours of the fake provider, by model name (see tests/support/fake_provider.py).
FAKE_MODELS = {
    "fake-chat": {},
    "fake-echo": {"echo": True},
    # continues a deleted response in one test: the provider's 404 puts a deployment in LiteLLM's cooldown (5 s)
    "fake-echo-continues": {"echo": True},
    "fake-embed": {},
    "paced": {"chunks": 5, "chunk_interval_ms": 50},
    "long-stream": {"chunks": 40, "chunk_interval_ms": 100},
    "drip": {"chunks": 20, "chunk_interval_ms": 700},  # 14 s: open at the provider until LiteLLM closes it
    "boom": {"status": 500},
    "busy": {"status": 503},
    "limited": {"status": 429, "retry_after": 7},
    "refuses": {"status": 400},
    "stuck": {"hang": True},
    "drops": {"chunks": 6, "chunk_interval_ms": 20, "disconnect_after_chunks": 2},
    "globex-private": {},
    "fake-echo-chars": {"echo": True, "chunk_chars": 1},  # streams its echo one character per event
    "falls-back": {"status": 500},  # LiteLLM falls back to fake-chat (FALLBACKS)
    "fake-echo-fixed": {"echo": True, "fixed": True},  # equal requests get byte-equal answers
    "fake-rerank": {},  # a Cohere rerank deployment
    "fake-whisper": {"echo": True},  # transcribes the "audio" (UTF-8 text) it is sent
    "fake-image": {},
    "fake-tts": {},
    "flaky-429": {"status": 429, "retry_after": 1, "fail_first": 2},  # two 429s for each prompt, then answers
    "limited-fast": {"status": 429, "retry_after": 1},
    "flaky-500": {"status": 500, "fail_first": 1},
    **{f"status-{status}": {"status": status} for status in (401, 403, 404, 422)},  # client errors of a provider
    # a first token 3 s late, then 10 chunks over 2 s
    "stalls": {"stall_every": 1, "stall_ms": 3000, "reply": "the slow answer", "chunks": 10, "chunk_interval_ms": 200},
    "fake-mini": {},  # model: auto's cheap tier (LITELLM_EXTRA)
    "fake-max": {},  # and its frontier
    "fake-split": {"echo": True, "split_at": "\x1f"},  # streams its echo in the pieces \x1f separates (guardrails)
    "fake-banned": {"reply": "Status: the kill switch is armed.", "chunks": 4},  # says a banned term (guardrails)
}
FALLBACKS = {"falls-back": ["fake-chat"]}
# Tenants of the test stack: acme may use every model but globex's private one.
TENANT_MODELS = {
    "acme": [m for m in FAKE_MODELS if m != "globex-private"],
    "globex": ["fake-chat", "globex-private"],
    "initech": ["fake-echo", "fake-echo-chars", "fake-embed", "fake-chat", "fake-rerank", "fake-whisper"],
    "hooli": ["fake-chat"],  # one model only: the allow-list a hostile client tries to get around
    "fuzzed": ["fake-chat", "fake-embed"],  # takes the fuzz's tens of thousands of requests (tests/stack/test_fuzz.py)
    "soylent": ["fake-echo-fixed"],  # rolls PII out endpoint by endpoint: watched (shadow), guarded (enforce), plain
    "cyberdyne": ["fake-chat", "paced", "long-stream", "stalls", "drip"],  # limits and budgets, an endpoint per kind
    # retries and fallbacks per endpoint (VANDELAY_RESILIENCE)
    # the cache layers (CACHE_ENDPOINTS): two tenants, so that what one stored is never the other's
    "wonka": ["fake-chat", "fake-echo", "fake-echo-chars", "fake-embed"],
    "oscorp": ["fake-chat", "fake-echo", "fake-echo-chars", "fake-embed"],
    "stark": ["fake-split", "fake-echo", "fake-echo-fixed", "fake-chat", "fake-banned"],  # guardrails (STARK_GUARDRAILS)
    "vandelay": ["fake-chat", "flaky-429", "limited-fast", "flaky-500", "boom", "refuses", "falls-back", "drops",
                 "stalls", "status-401", "status-403", "status-404", "status-422"],
}
TENANT_ENDPOINTS = {"acme": ["support", "search"], "globex": ["research"], "initech": ["notes", "intake"],
                    "hooli": ["kiosk"], "fuzzed": [], "soylent": ["watched", "guarded", "plain"],
                    "cyberdyne": ["burst", "narrow", "watched", "frugal", "tokens", "shared-rate", "shared-slots",
                                  "metered"],
                    "vandelay": ["retrying", "failover", "plain", "hedged", "bounded"],
                    "wonka": ["cached", "shadowed", "other", "private", "meaning"], "oscorp": ["cached"],
                    "stark": ["strict", "masked", "json", "shadowed", "plain"]}
# wonka's and oscorp's cache policies, per endpoint: `other` has the same policy as `cached` and its own entries.
CACHE_ON = {"exact": "enforce", "template": "enforce"}
CACHE_ENDPOINTS = {"cached": {"cache": CACHE_ON}, "shadowed": {"cache": {"exact": "shadow", "template": "shadow"}},
                   "other": {"cache": CACHE_ON},
                   "private": {"cache": CACHE_ON, "pii": {"mode": "enforce", "action": "pseudonymize"}},
                   "meaning": {"cache": {"exact": "enforce", "semantic": "enforce"}}}
# vandelay's resilience: `retrying` retries 429 and 5xx twice and never falls back (not even where LiteLLM's own
# config would: falls-back -> fake-chat); `failover` retries a 5xx once, then falls back to fake-chat, or to
# globex-private, which vandelay may not use (so never); `plain` leaves it to litellm_config.yaml.
VANDELAY_RESILIENCE = {
    "retrying": {"retries": {"rate_limited": 2, "server_error": 2}, "fallbacks": []},
    "failover": {"retries": {"server_error": 1}, "fallbacks": ["globex-private", "fake-chat"]},
    "hedged": {"hedge_after_ms": 400, "fallbacks": ["fake-chat"]},  # no first content in 0.4 s: fake-chat too
    "bounded": {"deadline_seconds": 1, "retries": {"rate_limited": 2}},  # 1 s for everything, retries included
}
# cyberdyne's limits, on Redis (the stack's GATEWAY_REDIS_URL): each endpoint counts its own.
CYBERDYNE_LIMITS = {
    "burst": {"mode": "enforce", "requests_per_minute": 5},
    "narrow": {"mode": "enforce", "concurrency": 2},
    "watched": {"mode": "shadow", "requests_per_minute": 2},
    "frugal": {"mode": "enforce", "usd_per_day": 0.01, "warn_at_percent": 50},
    "tokens": {"mode": "enforce", "tokens_per_minute": 400},
    "shared-rate": {"mode": "enforce", "requests_per_minute": 30},  # met by two replicas at once
    "shared-slots": {"mode": "enforce", "concurrency": 3},
    "metered": {"mode": "enforce", "usd_per_day": 10},  # never refuses: what a request leaves on the budget
    "one-slot": {"mode": "enforce", "concurrency": 1},
}
# stark's guardrails, per endpoint (wrapper/guardrails); `plain` has none.
BANNED = ["project falcon", "kill switch", "zero-day", "ban", "café noir"]
REFUND_LIMIT = {"check": "python", "name": "refund_limit", "options": {"max_usd": 100},
                "path": "wrapper.guardrails.examples.refund_limit:RefundLimit"}
STRICT = {"input": [{"check": "prompt_injection", "action": "block"},
                    {"check": "banned_terms", "name": "internal_names", "terms": ["operation nightfall"]}],
          "output": [{"check": "banned_terms", "terms": BANNED}, {"check": "secrets", "action": "redact"},
                     REFUND_LIMIT]}
STARK_GUARDRAILS = {
    "strict": {"mode": "enforce", **STRICT},
    "masked": {"mode": "enforce", "output": [{"check": "banned_terms", "terms": BANNED, "action": "redact"},
                                             {"check": "secrets", "action": "redact"}]},
    "json": {"mode": "enforce", "output": [{"check": "json"}]},
    "shadowed": {"mode": "shadow", **STRICT},
}
STACK_REDIS_URL = "redis://127.0.0.1:6379/3"  # a database of the stack's own, emptied when the stack starts
# initech protects personal data: pseudonymized by default, redacted for `notes`, refused for `intake`;
# a tenant pattern adds employee ids. Its audit keeps full (redacted) content, to show no raw value lands there.
INITECH_PII = {
    "mode": "pseudonymize",
    "endpoints": {"notes": "redact", "intake": "block"},
    "recognizers": [{"entity": "EMPLOYEE_ID", "patterns": [r"\bEMP-\d{6}\b"]}],
}
# LiteLLM-side settings per model; `stuck` gets a short timeout so the hang test is quick, and some
# models have prices, so that costs can be checked against the fake provider's usage.
PRICES = {"input": 0.0001, "output": 0.0002}  # per token, for the models priced below
_PRICED = {"input_cost_per_token": PRICES["input"], "output_cost_per_token": PRICES["output"]}
PRICE_PER_QUERY = 0.002  # rerank: per search unit (the fake bills one per call)
PRICE_PER_IMAGE = 0.04
PRICE_PER_CHARACTER = 0.00001  # speech
LITELLM_EXTRA = {"stuck": {"timeout": 2}, "fake-chat": _PRICED, "paced": _PRICED, "long-stream": _PRICED, "drops": _PRICED,
                 "fake-embed": {"input_cost_per_token": PRICES["input"]},  # embeddings bill their input only
                 "fake-rerank": {"provider": "cohere", "input_cost_per_query": PRICE_PER_QUERY},
                 "fake-whisper": _PRICED, "fake-image": {"output_cost_per_image": PRICE_PER_IMAGE},
                 "fake-tts": {"input_cost_per_character": PRICE_PER_CHARACTER},
                 "stalls": _PRICED, "fake-mini": {**_PRICED, "tier": "cheap"}, "fake-max": {**_PRICED, "tier": "frontier"}}
TOKENS_IN, TOKENS_OUT = Behaviour().prompt_tokens, Behaviour().completion_tokens  # the fake's usage of every answer
COST_EACH = TOKENS_IN * PRICES["input"] + TOKENS_OUT * PRICES["output"]  # what one answer of a priced model costs
EMBED_COST = TOKENS_IN * PRICES["input"]  # what one fake-embed call costs (the fake reports 11 prompt tokens)

MASTER_KEY = "sk-test-master-key"
INTERNAL_SECRET = "test-internal-secret"


@dataclass
class FakeProvider:
    url: str

    def log(self) -> list[dict]:
        return httpx.get(f"{self.url}/_fake/log").json()

    def requests_containing(self, marker: str) -> list[dict]:
        return [r for r in self.log() if marker in orjson.dumps(r["body"]).decode()]


@dataclass
class Stack:
    url: str  # the wrapper
    litellm_url: str
    log: Path
    config: Path  # its gateway.yaml
    keys: dict[str, str]  # name -> API key
    idp: IdentityProvider
    database_url: str  # its audit store (a fresh PostgreSQL database per test session)
    litellm_config: Path  # the models its LiteLLM serves (a wrapper of a test's own in front of it reads it too)

    @property
    def auth(self) -> dict[str, str]:
        """Headers of acme's unbound app key: the default caller of the tests."""
        return self.auth_for("acme-app")

    def signing_key(self):
        """The public key of the stack's audit signing key (kept in its var dir)."""
        from wrapper.audit.signing import Signer

        return Signer.load_or_create(None, self.config.parent / "var" / "audit-signing.key").public_key

    def auth_for(self, key_name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[key_name]}"}

    def count_tokens(self, **body) -> int:
        """LiteLLM's own count (its tokenizer for the model) of a prompt or messages."""
        reply = httpx.post(f"{self.litellm_url}/utils/token_counter", json=body, timeout=10,
                           headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert reply.status_code == 200, reply.text
        return reply.json()["total_tokens"]


def write_gateway_config(path: Path, idp: IdentityProvider, litellm_config: Path) -> dict[str, str]:
    """Tenants made with the real CLI (and some keys), plus the org SSO section; returns the keys by name."""
    path.write_text(orjson.dumps({"oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": idp.jwks_url,
                                           "jwks_refresh_min_seconds": 1}}).decode())
    for tenant, models in TENANT_MODELS.items():
        gateway_cli(path, "tenants", "add", tenant, "--models", *models, "--endpoints", *TENANT_ENDPOINTS[tenant],
                    "--litellm-config", str(litellm_config))
    config = yaml.safe_load(path.read_text())
    config["tenants"]["initech"].update(pii=INITECH_PII, audit={"content": "full"}, fields={"allow": ["vendor_options"]})
    config["tenants"]["hooli"].update(fields={"allow": ["top_k"]})
    # The new way: policies on endpoints, each with a mode (initech above keeps the earlier `pii.endpoints` form).
    config["tenants"]["soylent"]["endpoints"].update(watched={"pii": {"mode": "shadow", "action": "redact"}},
                                                     guarded={"pii": {"mode": "enforce", "action": "redact"}})
    config["tenants"]["cyberdyne"]["endpoints"].update({name: {"limits": limits} for name, limits in CYBERDYNE_LIMITS.items()})
    config["tenants"]["vandelay"]["endpoints"].update({name: {"resilience": policy}
                                                       for name, policy in VANDELAY_RESILIENCE.items()})
    config["tenants"]["wonka"]["endpoints"].update(CACHE_ENDPOINTS)
    config["tenants"]["oscorp"]["endpoints"].update(cached=CACHE_ENDPOINTS["cached"])
    config["tenants"]["stark"]["endpoints"].update({name: {"guardrails": policy}
                                                       for name, policy in STARK_GUARDRAILS.items()})
    config["tenants"]["stark"]["audit"] = {"content": "full"}  # to show what the record keeps of a finding
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    def key(tenant: str, name: str, endpoint: str | None = None, role: str = "app") -> str:
        """Made in process: a CLI run per key (~2 s each) would put the stack's start past the first test's
        timeout on a slow machine; acme's keys below are made with the real CLI."""
        from wrapper.config import Role, edit

        return edit.create_key(path, tenant, name, endpoint, Role(role))[1]

    return {
        "acme-app": gateway_cli(path, "keys", "create", "--tenant", "acme", "--name", "acme-app"),
        "acme-support": gateway_cli(path, "keys", "create", "--tenant", "acme", "--name", "bot", "--endpoint", "support"),
        "acme-auditor": gateway_cli(path, "keys", "create", "--tenant", "acme", "--name", "audit", "--role", "auditor"),
        "acme-finance": gateway_cli(path, "keys", "create", "--tenant", "acme", "--name", "finance", "--role", "finance"),
        "admin": key("acme", "platform", role="admin"),
        "initech-app": key("initech", "initech-app"),
        "initech-notes": key("initech", "notes", "notes"),
        "initech-intake": key("initech", "intake", "intake"),
        "initech-auditor": key("initech", "audit", role="auditor"),
        "globex-app": key("globex", "globex-app"),
        "globex-auditor": key("globex", "audit", role="auditor"),
        "cyberdyne-finance": key("cyberdyne", "finance", role="finance"),
        "hooli-app": key("hooli", "hooli-app"),
        "fuzzed-app": key("fuzzed", "fuzzed-app"),
        **{f"soylent-{endpoint}": key("soylent", endpoint, endpoint) for endpoint in ("watched", "guarded", "plain")},
        **{f"cyberdyne-{endpoint}": key("cyberdyne", endpoint, endpoint) for endpoint in CYBERDYNE_LIMITS},
        **{f"vandelay-{endpoint}": key("vandelay", endpoint, endpoint) for endpoint in TENANT_ENDPOINTS["vandelay"]},
        **{f"wonka-{endpoint}": key("wonka", endpoint, endpoint) for endpoint in CACHE_ENDPOINTS},
        "oscorp-cached": key("oscorp", "cached", "cached"),
        **{f"stark-{endpoint}": key("stark", endpoint, endpoint) for endpoint in TENANT_ENDPOINTS["stark"]},
    }


@pytest.fixture(scope="session")
def idp() -> IdentityProvider:
    provider = IdentityProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def fake_provider(tmp_path_factory) -> FakeProvider:
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "fake.log"
    process = start(
        [str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(port), "--behaviours", orjson.dumps(FAKE_MODELS).decode()],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{url}/_fake/log", 20, process, log)
    yield FakeProvider(url)
    stop(process)


@pytest.fixture(scope="session")
def stack_database() -> str:
    """A fresh PostgreSQL database for the stack's audit log, dropped at the end of the session."""
    name = f"gw_stack_{uuid.uuid4().hex[:12]}"
    as_superuser(f'CREATE DATABASE "{name}"')
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    as_superuser(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def langfuse(tmp_path_factory) -> OtlpStubProcess:
    """Where the stack's LiteLLM sends its Langfuse traces (tests/otlp_stub.py)."""
    stub = OtlpStubProcess(tmp_path_factory.mktemp("langfuse") / "langfuse.log")
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def stack(fake_provider, idp, stack_database, langfuse, tmp_path_factory) -> Stack:
    workdir = tmp_path_factory.mktemp("stack")
    redis.Redis.from_url(STACK_REDIS_URL).flushdb()  # counters of an earlier session (budgets last the day)
    gateway_config = workdir / "gateway.yaml"
    models = {name: LITELLM_EXTRA.get(name, {}) for name in FAKE_MODELS}
    config = write_litellm_config(workdir / "litellm_config.yaml", fake_provider.url, models,
                                  extra_callbacks=("custom_callbacks.langfuse_traces",), fallbacks=FALLBACKS)
    keys = write_gateway_config(gateway_config, idp, config)
    port, litellm_port = free_port(), free_port()
    log = workdir / "gateway.log"
    process = start(
        [str(BIN / "gateway"), "up", "--config", str(gateway_config), "--litellm-config", str(config)],
        log,
        env={
            "GATEWAY_PORT": str(port),
            "GATEWAY_LITELLM_PORT": str(litellm_port),
            "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY,
            "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
            "GATEWAY_DATABASE_URL": stack_database,
            "GATEWAY_REDIS_URL": STACK_REDIS_URL,
            "GATEWAY_HEDGE_BUDGET_PERCENT": "100",  # the hedging tests hedge on demand (the budget: unit tests)
            "GATEWAY_VAR_DIR": str(workdir / "var"),
            "GATEWAY_LOG_REQUESTS": "true",  # tests read what LiteLLM's callback admitted from its log line
            "LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test",
            "LANGFUSE_BASE_URL": langfuse.url, "LANGFUSE_FLUSH_INTERVAL": "0.2", "LANGFUSE_TIMEOUT": "2",
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{url}/readyz", 90, process, log)
    yield Stack(url, f"http://127.0.0.1:{litellm_port}", log, gateway_config, keys, idp, stack_database, config)
    assert stop(process) == 0, log.read_text()[-3000:]


@pytest.fixture
def openai_client(stack):
    from openai import OpenAI

    with OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme-app"], max_retries=0, timeout=30) as client:
        yield client
