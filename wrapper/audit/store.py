"""Append records to each tenant's chain, and verify a chain end to end.

Appends for one tenant are serialised by a row lock on its head (PostgreSQL)
or by SQLite's single writer: the first statement of every append transaction
is a write, so the lock is held before the head is read. Concurrent writers in
any number of processes therefore leave a gap-free chain.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from wrapper.audit.chain import GENESIS, canonical, row_hash
from wrapper.audit.schema import audit_events, audit_heads


@dataclass(frozen=True)
class Verdict:
    tenant: str
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_size=10, max_overflow=10)


class AuditStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    async def append(self, records: list[dict]) -> list[tuple[str, int]]:
        """Append records (each with tenant, request_id, occurred_at) in one transaction; returns (tenant, seq) of each."""
        by_tenant: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            by_tenant[record["tenant"]].append(record)
        placed: dict[int, tuple[str, int]] = {}
        async with self.engine.begin() as conn:
            for tenant in sorted(by_tenant):  # one lock order for every writer: no deadlocks
                await conn.execute(
                    self._insert(audit_heads).values(tenant=tenant, seq=0, head_hash=GENESIS).on_conflict_do_nothing()
                )
                head = (
                    await conn.execute(select(audit_heads.c.seq, audit_heads.c.head_hash)
                                       .where(audit_heads.c.tenant == tenant).with_for_update())
                ).one()
                seq, prev = head.seq, head.head_hash
                rows = []
                for record in by_tenant[tenant]:
                    seq += 1
                    text = canonical(_jsonable(record))
                    digest = row_hash(tenant, seq, prev, text)
                    rows.append({"tenant": tenant, "seq": seq, "request_id": record["request_id"],
                                 "occurred_at": record["occurred_at"], "record": text,
                                 "prev_hash": prev, "row_hash": digest})
                    placed[id(record)] = (tenant, seq)
                    prev = digest
                await conn.execute(audit_events.insert(), rows)
                await conn.execute(update(audit_heads).where(audit_heads.c.tenant == tenant).values(seq=seq, head_hash=prev))
        return [placed[id(record)] for record in records]

    async def tenants(self) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(audit_heads.c.tenant).order_by(audit_heads.c.tenant))).scalars())

    async def verify(self, tenant: str) -> Verdict:
        """Recompute the tenant's chain from the first record; name the first record that does not fit."""
        expected_seq, prev, checked = 1, GENESIS, 0
        async with self.engine.connect() as conn:
            head = (await conn.execute(select(audit_heads).where(audit_heads.c.tenant == tenant))).one_or_none()
            result = await conn.stream(select(audit_events).where(audit_events.c.tenant == tenant).order_by(audit_events.c.seq))
            async for row in result:
                if row.seq != expected_seq:
                    return Verdict(tenant, False, checked, expected_seq, f"record {expected_seq} is missing")
                if row.prev_hash != prev:
                    return Verdict(tenant, False, checked, row.seq, "prev_hash does not link to the record before")
                if row_hash(tenant, row.seq, row.prev_hash, row.record) != row.row_hash:
                    return Verdict(tenant, False, checked, row.seq, "the record does not match its hash")
                if _column_mismatch(row):
                    return Verdict(tenant, False, checked, row.seq, f"column {_column_mismatch(row)} differs from the hashed record")
                prev, expected_seq, checked = row.row_hash, expected_seq + 1, checked + 1
        if head is not None and (head.seq != checked or head.head_hash != prev):
            return Verdict(tenant, False, checked, checked + 1, f"the chain ends at {checked} but its head says {head.seq}")
        return Verdict(tenant, True, checked)


def _jsonable(record: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in record.items()}


def _column_mismatch(row) -> str | None:
    """Columns kept beside the record for queries must say what the hashed record says."""
    record = json.loads(row.record)
    if record.get("request_id") != row.request_id:
        return "request_id"
    occurred = datetime.fromisoformat(record["occurred_at"])
    if occurred != (row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=occurred.tzinfo)):
        return "occurred_at"
    return None
