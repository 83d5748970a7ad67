"""Tables of the audit log (created by the Alembic migrations in ./migrations)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

# Append-only: the database refuses UPDATE, DELETE and TRUNCATE (see the first migration).
audit_events = Table(
    "audit_events",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("request_id", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("record", Text, nullable=False),  # the canonical JSON the hash covers
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
    # Copies of record fields for the audit API's filters (migration 0003; verify checks they agree).
    Column("user_id", String(256)),
    Column("endpoint", String(64)),
    Column("model", String(256)),
    Column("status", Integer),
    # The cost ledger (migration 0004), summed by the cost API; also copies that verify checks.
    Column("model_served", String(256)),
    Column("tier", String(256)),
    Column("tokens_in", Integer),
    Column("tokens_out", Integer),
    Column("cost", Float),
    Column("cache_hit", Boolean),
)
Index("ix_audit_events_request_id", audit_events.c.request_id)
Index("ix_audit_events_tenant_time", audit_events.c.tenant, audit_events.c.occurred_at)

# The head of each tenant's chain: serialises appends across processes (row lock) in O(1).
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
)

# Signed checkpoints of each chain's head (append-only too; see the second migration).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),  # ISO text: exactly what was signed
    Column("key_id", String(16), nullable=False),
    Column("signature", Text, nullable=False),
)
