"""Ids of stored objects as clients see them (responses, their output items): the provider's (or LiteLLM's) id,
sealed to the tenant that created it, its prefix kept (`resp_`, `msg_`, `fc_` ...).

The owner is recorded in the id itself, under an HMAC keyed by a secret derived
from the audit signing key (so every replica, and every restart, reads it the
same way), not in a table: nothing to look up on the hot path, nothing lost
between replicas or when the audit store is down, no race between a create and
the retrieve that follows it. An id that is not one of the gateway's, was
changed, or was made for another tenant opens to nothing: a 404, whatever the
provider would have answered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

_MAC_BYTES = 16
# A sealed response id is about 4/3 of LiteLLM's (~430 characters) plus the tenant: bounded well above that.
MAX_LENGTH = 2048
ID_PATTERN = r"[a-z]{1,16}_[A-Za-z0-9_-]+"


class ObjectIds:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, tenant: str, inner: str) -> str:
        prefix = inner.split("_", 1)[0] if "_" in inner[:17] else "obj"
        payload = tenant.encode() + b"\0" + inner.encode()
        return prefix + "_" + base64.urlsafe_b64encode(self._mac(payload) + payload).decode().rstrip("=")

    def open(self, tenant: str, outer: object) -> str | None:
        """The id inside `outer`, if `outer` is an id sealed for this tenant; else None."""
        if not isinstance(outer, str) or "_" not in outer[:17] or len(outer) > MAX_LENGTH:
            return None
        encoded = outer.split("_", 1)[1]
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        owner, _, inner = payload.partition(b"\0")
        if owner != tenant.encode() or not inner:
            return None
        return inner.decode("utf-8", "replace")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
