"""The in-process tier: the wrapper app itself, driven through ASGI, with the fake provider where LiteLLM would be.

No sockets and no other process: the app is `create_app` with its LiteLLM client replaced by `InProcessLiteLLM`,
which hands each call to the fake provider's ASGI app (tests/support/fake_provider.py); the audit log is a real
SQLite file. What crosses processes (LiteLLM itself, PostgreSQL, `gateway up`) is the stack tier's.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.fake_provider import FakeProvider
from tests.support.processes import write_litellm_config
from wrapper.upstream.client import UpstreamReply, UpstreamStream, upstream_error


class InProcessLiteLLM:
    """The wrapper's LiteLLM client, answered by an ASGI app in this process (responses are whole, not streamed)."""

    def __init__(self, app) -> None:
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://litellm")

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, path: str, body: bytes, request_id: str, headers: dict | None = None,
                   ready=None) -> UpstreamReply:
        return await self.call("POST", path, body, request_id, headers, ready)

    async def call(self, method: str, path: str, body: bytes, request_id: str,
                   headers: dict | None = None, ready=None) -> UpstreamReply:
        if ready is not None:  # as the real client: nothing is sent before it has returned
            await ready()
        started = time.perf_counter()
        response = await self._client.request(method, path, content=body,
                                              headers={"x-request-id": request_id, **(headers or {})})
        if response.status_code >= 400:
            raise upstream_error(response.status_code, response.content, response.headers)
        return UpstreamReply(response.status_code, response.content, dict(response.headers),
                             time.perf_counter() - started)

    async def open_stream(self, path: str, body: bytes, request_id: str, headers: dict | None = None,
                          ready=None) -> UpstreamStream:
        if ready is not None:
            await ready()
        started = time.perf_counter()
        response = await self._client.post(path, content=body, headers={"x-request-id": request_id, **(headers or {})})
        if response.status_code >= 400:
            raise upstream_error(response.status_code, response.content, response.headers)

        async def chunks():
            for line in response.content.splitlines(keepends=True):  # a line at a time: events split anywhere
                yield line

        return UpstreamStream(dict(response.headers), time.perf_counter() - started, chunks(), lambda: None)

    async def get(self, path: str) -> tuple[int, bytes]:
        if path == "/health/liveliness":  # LiteLLM's own liveness route: this stand-in is always up
            return 200, b'"I\'m alive!"'
        response = await self._client.get(path)
        return response.status_code, response.content


@dataclass
class Gateway:
    """The app in process: `client` calls it, `provider` is the fake behind it, `config` its gateway.yaml."""

    client: httpx.AsyncClient
    provider: FakeProvider
    config: Path
    keys: dict[str, str]
    app: object = None  # the app itself (wrapper.app.GatewayApp): its FastAPI routes are `app.api.routes`

    def auth(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[key]}"}

    def received(self, marker: str) -> list[dict]:
        """The bodies the provider received that carry this marker."""
        import orjson

        return [r.body for r in self.provider.log if marker in orjson.dumps(r.body).decode()]


# One tenant with two endpoints: the pipeline's modes are set per endpoint by the tests.
TENANT = {"models": ["fake-chat", "fake-echo", "fake-embed", "cached"], "endpoints": {"shadowed": {}, "enforced": {}}}
MODELS = {"fake-chat": {}, "fake-echo": {"echo": True}, "fake-embed": {},
          "cached": {"headers": {"x-litellm-cache-key": "k1", "x-litellm-model-group": "cached"}}}


@pytest.fixture
async def gateway(tmp_path):
    """A fresh app for one test. Edit `gateway.config` to change policies: the app reloads it on the next request."""
    async with in_process_gateway(tmp_path) as app:
        yield app


@asynccontextmanager
async def in_process_gateway(tmp_path, tenant: dict = TENANT, models: dict = MODELS, **settings_overrides):
    """The app with tenant `acme` (`tenant`'s settings), these models (name -> fake provider behaviour, plus a
    `tier`) and these settings (redis_url ...)."""
    from wrapper.app import create_app
    from wrapper.audit.migrate import upgrade_database
    from wrapper.config import Role, edit
    from wrapper.settings import Settings

    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"tenants": {"acme": tenant}}))
    keys = {name: edit.create_key(config, "acme", name, name, Role.app)[1] for name in ("shadowed", "enforced")}
    keys["acme"] = edit.create_key(config, "acme", "acme", None, Role.app)[1]
    keys["auditor"] = edit.create_key(config, "acme", "auditor", None, Role.auditor)[1]
    litellm_config = write_litellm_config(tmp_path / "litellm_config.yaml", "http://unused",
                                          {m: {"tier": b["tier"]} if "tier" in b else {} for m, b in models.items()})
    settings_overrides.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    settings = Settings(config=config, litellm_config=litellm_config, internal_secret="in-process", var_dir=tmp_path / "var",
                        **settings_overrides)
    await upgrade_database(settings.database_url)
    provider = FakeProvider({m: {k: v for k, v in b.items() if k != "tier"} for m, b in models.items()})
    app = create_app(settings, litellm=InProcessLiteLLM(provider))
    async with app.api.router.lifespan_context(app.api):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield Gateway(client, provider, config, keys, app)
