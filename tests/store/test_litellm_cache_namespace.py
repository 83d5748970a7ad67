"""LiteLLM's own cache, when litellm_config.yaml turns it on: the guard namespaces every entry by tenant and endpoint,
so one tenant's request can never read another's entry, whatever namespace the request asks for (LiteLLM's real
cache, in process, keyed as LiteLLM keys it)."""

from __future__ import annotations

import litellm
import pytest
from fastapi import HTTPException
from litellm.caching.caching import Cache

from custom_callbacks.guard import WrapperOnlyGuard
from custom_callbacks.seal import sealed_metadata

SECRET = "cache-test-secret"
BODY = {"model": "fake-chat", "messages": [{"role": "user", "content": "What is our refund policy?"}]}


def sealed(tenant: str, endpoint: str | None = None, **unsealed) -> dict:
    identity = {"gateway_request_id": f"r-{tenant}", "gateway_tenant_id": tenant, "gateway_credential_id": "key:1",
                "gateway_endpoint": endpoint, "tags": [f"tenant:{tenant}"]}
    return {**BODY, "metadata": {**sealed_metadata(SECRET.encode(), BODY, identity), **unsealed}}


@pytest.fixture
def guard(monkeypatch):
    monkeypatch.setenv("GATEWAY_INTERNAL_SECRET", SECRET)
    monkeypatch.setattr(litellm, "cache", Cache(type="local"))
    return WrapperOnlyGuard()


async def test_each_tenant_and_endpoint_has_its_own_entries_whatever_namespace_a_request_names(guard):
    cache = litellm.cache
    acme = await guard.async_pre_call_hook(None, None, sealed("acme"), "acompletion")
    cache.add_cache({"answer": "acme's"}, **acme)
    assert cache.get_cache(**acme) == {"answer": "acme's"}  # the same tenant's request hits
    # globex asks for acme's namespace in its metadata: overruled
    globex = await guard.async_pre_call_hook(None, None, sealed("globex", redis_namespace="gw:acme:-"), "acompletion")
    assert cache.get_cache(**globex) is None
    other_endpoint = await guard.async_pre_call_hook(None, None, sealed("acme", "support"), "acompletion")
    assert cache.get_cache(**other_endpoint) is None
    assert cache.get_cache_key(**acme).startswith("gw:acme:-:")


async def test_the_cache_field_litellm_would_read_a_namespace_from_is_refused(guard):
    for control in ({"namespace": "gw:acme:-"}, {"no-cache": True}):
        with pytest.raises(HTTPException) as refused:
            await guard.async_pre_call_hook(None, None, {**sealed("globex"), "cache": control}, "acompletion")
        assert refused.value.status_code == 403
