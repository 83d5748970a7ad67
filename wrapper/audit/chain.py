"""The hash chain: a canonical form of each record and the hash linking it to the one before.

row_hash = SHA-256 over the tenant, the seq, the previous row's hash and the
canonical record. Tenant and seq are inside the hash, so a row moved to another
place (swapped, renumbered, copied to another tenant) no longer verifies.
A row also carries copies of some record fields in query columns; verify checks
that they say what the hashed record says.
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


# Query columns kept beside the hashed record: column name -> (record field, the type the column holds).
# A record field of another type is not copied: the column stays NULL.
QUERY_COLUMNS = {"user_id": ("user", str), "endpoint": ("endpoint", str), "model": ("model", str),
                 "status": ("status", int), "model_served": ("model_served", str), "tier": ("tier", str),
                 "tokens_in": ("tokens_in", int), "tokens_out": ("tokens_out", int), "cost": ("cost", float),
                 "cache_hit": ("cache_hit", bool)}


def query_columns(record: dict) -> dict[str, object]:
    """The copies of a record's fields kept in the query columns (the same rule on write and on verify)."""
    return {column: _as(kind, record.get(field)) for column, (field, kind) in QUERY_COLUMNS.items()}


def _as(kind: type, value: object) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        return None
    return value if isinstance(value, kind) else None


def chain_rows(tenant: str, head_seq: int, head_hash: str, records: list[dict]) -> list[dict]:
    """The rows that extend a chain whose head is (head_seq, head_hash) by these records, hashes linked."""
    rows, seq, prev = [], head_seq, head_hash
    for record in records:
        seq += 1
        text = canonical(jsonable(record))
        digest = row_hash(tenant, seq, prev, text)
        rows.append({"tenant": tenant, "seq": seq, "request_id": record["request_id"],
                     "occurred_at": record["occurred_at"], "record": text, "prev_hash": prev, "row_hash": digest,
                     **query_columns(record)})
        prev = digest
    return rows
