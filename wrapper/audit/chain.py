"""The hash chain: a canonical form of each record and the hash linking it to the one before.

row_hash = SHA-256 over the tenant, the seq, the previous row's hash and the
canonical record. Tenant and seq are inside the hash, so a row moved to another
place (swapped, renumbered, copied to another tenant) no longer verifies.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

GENESIS = "0" * 64


def canonical(record: dict) -> str:
    """One exact text per record: sorted keys, no spaces, UTF-8. Values must be JSON types."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def row_hash(tenant: str, seq: int, prev_hash: str, canonical_record: str) -> str:
    material = f"{tenant}\n{seq}\n{prev_hash}\n{canonical_record}".encode()
    return hashlib.sha256(material).hexdigest()


def jsonable(record: dict) -> dict:
    """Top-level datetimes as ISO text: the one conversion a record needs before `canonical`."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items()}
