"""Which models a tenant may use."""

from __future__ import annotations

import orjson

from wrapper.errors import GatewayError
from wrapper.gateway_config import Tenant


def check_model_allowed(tenant: Tenant, model: str) -> None:
    if not tenant.allows_model(model):
        raise GatewayError(403, f"Model '{model}' is not available to this tenant.", code="model_not_allowed", param="model")


def models_for_tenant(litellm_listing: bytes, tenant: Tenant) -> bytes:
    """LiteLLM's /v1/models answer, narrowed to the tenant's allowed models."""
    listing = orjson.loads(litellm_listing)
    listing["data"] = [m for m in listing.get("data", []) if tenant.allows_model(m.get("id", ""))]
    return orjson.dumps(listing)
