"""The seal the wrapper puts on the metadata it sends to LiteLLM.

The master key lets a caller into LiteLLM; the seal proves the request came
through the wrapper, and as the wrapper sent it. It is an HMAC, keyed by
GATEWAY_INTERNAL_SECRET (which only the wrapper and LiteLLM hold; `gateway up`
generates one per start when it is unset), over:
- who is asking: request id, tenant, user, endpoint, credential, tags (and the
  concurrency slots LiteLLM is to give back if the wrapper hangs up a stream);
- what LiteLLM is asked to do: the model, the names of the body's top-level
  fields, and a digest of the control fields the gateway set (retries,
  fallbacks, timeouts ...: CONTROL_FIELDS, from its config, never a client's).
Someone holding just the master key cannot forge it, and a sealed request
changed afterwards (another model, an added `fallbacks` or `api_base`, a
changed retry count) no longer fits it (custom_callbacks.guard checks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

SECRET_ENV = "GATEWAY_INTERNAL_SECRET"
SEAL_KEY = "gateway_seal"
# The metadata fields the wrapper vouches for; all are covered by the seal. Prefixed, because
# LiteLLM writes keys of its own into the same dict (it sets `endpoint` to the request URL).
IDENTITY_KEYS = ("gateway_request_id", "gateway_tenant_id", "gateway_user_id", "gateway_endpoint", "gateway_credential_id",
                 "gateway_release")  # the last: concurrency slots LiteLLM gives back (custom_callbacks/slot_release.py)
BODY_KEYS = ("gateway_model", "gateway_fields", "gateway_controls")
SEALED_KEYS = IDENTITY_KEYS + BODY_KEYS
# Of those, the ones every request must carry.
REQUIRED_KEYS = ("gateway_request_id", "gateway_tenant_id", "gateway_credential_id", "gateway_model", "gateway_fields")
# The tenant of the wrapper's warm-up calls (wrapper.upstream.client.LiteLLMClient.warm_up): sealed like any request,
# so LiteLLM walks its whole path up to the guard, which stops it there, before any provider. Tenant ids cannot
# start with "_", so no client's request is ever one.
WARM_UP_TENANT = "_warm_up"
# The sealed "model" of a call that names a stored object (a response id) instead of a model.
STORED_OBJECT = "-"
# Where the client's own metadata travels: nested, so none of its keys reads as one LiteLLM acts on.
CLIENT_METADATA_KEY = "gateway_client_metadata"
# Fields LiteLLM acts on that the gateway may set from its config and the endpoint's policy; their values are sealed.
CONTROL_FIELDS = (
    "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "num_retries", "max_retries", "timeout",
    "stream_timeout", "request_timeout", "model_group_retry_policy", "disable_fallbacks", "max_fallbacks",
    "mock_response", "cache", "caching", "ttl", "deployment_id", "specific_deployment", "custom_llm_provider",
    "api_base", "base_url", "api_key",
)


def secret_from_env() -> bytes | None:
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def body_facts(body: dict) -> dict[str, str]:
    """The sealed description of a body: its model, its top-level field names (`metadata`, where the seal travels,
    always among them), and its control fields' digest."""
    return {"gateway_model": body.get("model") if isinstance(body.get("model"), str) else "",
            "gateway_fields": ",".join(sorted({*body, "metadata"})), "gateway_controls": controls_digest(body)}


def controls_digest(body: dict) -> str:
    controls = {key: body[key] for key in CONTROL_FIELDS if key in body}
    if not controls:
        return ""
    return hashlib.sha256(json.dumps(controls, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(secret: bytes, metadata: dict) -> str:
    lines = [f"{key}={metadata.get(key) or ''}" for key in SEALED_KEYS]
    tags = metadata.get("tags")
    lines.append("tags=" + (",".join(map(str, tags)) if isinstance(tags, list) else ""))
    digest = hmac.new(secret, "\n".join(lines).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sealed_metadata(secret: bytes, body: dict, identity: dict) -> dict:
    """Sealed metadata for `body`, which holds every field it will be sent with but this metadata.

    `identity` holds the IDENTITY_KEYS and `tags`; anything else in it travels unsealed."""
    metadata = {**identity, **body_facts(body)}
    metadata[SEAL_KEY] = seal(secret, metadata)
    return metadata


def refusal_reason(secret: bytes | None, metadata: object) -> str | None:
    """None when the metadata carries a valid seal, else why not (safe to log: names, never values)."""
    if not secret:
        return f"{SECRET_ENV} is not set"
    if not isinstance(metadata, dict):
        return "no metadata"
    missing = [key for key in (*REQUIRED_KEYS, SEAL_KEY) if not metadata.get(key)]
    if missing:
        return f"missing {', '.join(missing)}"
    presented = metadata[SEAL_KEY]
    if not isinstance(presented, str) or not hmac.compare_digest(presented, seal(secret, metadata)):
        return "the seal does not match"
    return None


def is_sealed(secret: bytes | None, metadata: object) -> bool:
    return refusal_reason(secret, metadata) is None
