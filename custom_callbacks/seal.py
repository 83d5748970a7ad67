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
# The metadata fields covered by the seal; later concerns (tenant, user...) add theirs.
SEALED_KEYS = ("request_id",)


def secret_from_env() -> bytes | None:
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def seal(secret: bytes, metadata: dict) -> str:
    canonical = "\n".join(f"{key}={metadata.get(key, '')}" for key in SEALED_KEYS).encode()
    digest = hmac.new(secret, canonical, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_sealed(secret: bytes | None, metadata: object) -> bool:
    if not secret or not isinstance(metadata, dict):
        return False
    presented = metadata.get(SEAL_KEY)
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented, seal(secret, metadata))
