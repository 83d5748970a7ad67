"""Gateway API keys: `gwk_<key id>_<secret>`.

The key id (12 hex characters) makes lookup O(1); the secret carries 256 bits of
entropy, so a plain SHA-256 of the whole key is a safe stored form (no slow KDF
needed, unlike passwords). Only the hash is ever stored; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "gwk_"
_SHAPE = re.compile(r"gwk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def new_key() -> tuple[str, str, str]:
    """A fresh key: (key id, the key to give out once, its stored hash)."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, hash_key(key)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_id_of(presented: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _SHAPE.fullmatch(presented)
    return match.group(1) if match else None


def matches(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(presented), stored_hash)


def looks_like_a_key(presented: str) -> bool:
    return presented.startswith(PREFIX)
