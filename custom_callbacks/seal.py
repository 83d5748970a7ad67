"""The seal the wrapper puts on the metadata it sends to LiteLLM.

The master key lets a caller into LiteLLM; the seal proves the request came
through the wrapper. It is an HMAC over the metadata fields the wrapper vouches
for, keyed by GATEWAY_INTERNAL_SECRET, which only the wrapper and LiteLLM hold
(`gateway up` generates one per start when it is unset). Someone holding just
the master key cannot forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SECRET_ENV = "GATEWAY_INTERNAL_SECRET"
SEAL_KEY = "gateway_seal"
# The metadata fields the wrapper vouches for; all are covered by the seal. Prefixed, because
# LiteLLM writes keys of its own into the same dict (it sets `endpoint` to the request URL).
SEALED_KEYS = ("gateway_request_id", "gateway_tenant_id", "gateway_user_id", "gateway_endpoint", "gateway_credential_id")
# Of those, the ones every request must carry.
REQUIRED_KEYS = ("gateway_request_id", "gateway_tenant_id", "gateway_credential_id")


def secret_from_env() -> bytes | None:
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def seal(secret: bytes, metadata: dict) -> str:
    canonical = "\n".join(f"{key}={metadata.get(key) or ''}" for key in SEALED_KEYS).encode()
    digest = hmac.new(secret, canonical, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


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
