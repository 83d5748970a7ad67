"""Append records to each tenant's chain, and verify a chain end to end.

Appends for one tenant are serialised by a row lock on its head (PostgreSQL)
or by SQLite's single writer: the first statement of every append transaction
is a write (on SQLite, BEGIN IMMEDIATE: see sqlite_append.py), so the lock is
held before the head is read. Concurrent writers in any number of processes
therefore leave a gap-free chain. On PostgreSQL a batch
of one tenant first tries the one-statement optimistic append (optimistic.py),
which is the same guarantee in one round trip.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from wrapper.audit.chain import GENESIS, chain_rows, query_columns, row_hash
from wrapper.audit.optimistic import OptimisticAppender
from wrapper.audit.sqlite_append import SqliteAppender
from wrapper.audit.schema import audit_checkpoints, audit_events, audit_heads
from wrapper.audit.signing import Signer, checkpoint_message, signature_valid


@dataclass(frozen=True)
class Verdict:
    tenant: str
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_durable_wal)
        return engine
    # Bounded waits: a black-holed database must fail requests (or spool records), not hang them.
    return create_async_engine(url, pool_size=10, max_overflow=10,
                               connect_args={"timeout": 5, "command_timeout": 10})


def _sqlite_durable_wal(dbapi_connection, _record) -> None:
    """WAL lets exports and queries read while the wrapper writes; FULL syncs every commit to disk."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


class AuditStore:
    def __init__(self, engine: AsyncEngine, append_timeout: float | None = None) -> None:
        """`append_timeout`: the server gives up an append's lock wait or statement after it (PostgreSQL)."""
        self.engine = engine
        postgres = engine.dialect.name == "postgresql"
        self._insert = pg_insert if postgres else sqlite_insert
        self._timeout_ms = int(append_timeout * 1000) if append_timeout else None
        self._optimistic = OptimisticAppender(engine, self._timeout_ms) if postgres else None
        database = engine.url.database
        self._sqlite = SqliteAppender(database) if not postgres and database and database != ":memory:" else None

    async def append(self, records: list[dict]) -> list[tuple[str, int]]:
        """Append records (each with tenant, request_id, occurred_at) atomically; returns (tenant, seq) of each."""
        if self._sqlite is not None:
            return await self._sqlite.append(records)
        if self._optimistic is not None and len({r["tenant"] for r in records}) == 1:
            placed = await self._optimistic.append(records[0]["tenant"], records)
            if placed is not None:
                return placed
        async with self.engine.begin() as conn:
            if self._timeout_ms:
                await conn.exec_driver_sql(f"SET LOCAL lock_timeout = {self._timeout_ms}")
            return await self.append_in(conn, records)

    async def reachable(self, timeout: float) -> bool:
        """The store answers a trivial query within `timeout` (the readiness probe's question)."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Release every connection (the writer's held one too)."""
        if self._optimistic is not None:
            await self._optimistic.close()
        if self._sqlite is not None:
            await self._sqlite.close()
        await self.engine.dispose()

    async def append_in(self, conn: AsyncConnection, records: list[dict]) -> list[tuple[str, int]]:
        """Append within the caller's transaction (the retention cut deletes and records in one)."""
        by_tenant: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            by_tenant[record["tenant"]].append(record)
        placed: dict[int, tuple[str, int]] = {}
        for tenant in sorted(by_tenant):  # one lock order for every writer: no deadlocks
            await conn.execute(
                self._insert(audit_heads).values(tenant=tenant, seq=0, head_hash=GENESIS).on_conflict_do_nothing()
            )
            head = (
                await conn.execute(select(audit_heads.c.seq, audit_heads.c.head_hash)
                                   .where(audit_heads.c.tenant == tenant).with_for_update())
            ).one()
            rows = chain_rows(tenant, head.seq, head.head_hash, by_tenant[tenant])
            for record, row in zip(by_tenant[tenant], rows):
                placed[id(record)] = (tenant, row["seq"])
            await conn.execute(audit_events.insert(), rows)
            await conn.execute(update(audit_heads).where(audit_heads.c.tenant == tenant)
                               .values(seq=rows[-1]["seq"], head_hash=rows[-1]["row_hash"]))
        return [placed[id(record)] for record in records]

    async def tenants(self) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(audit_heads.c.tenant).order_by(audit_heads.c.tenant))).scalars())

    async def checkpoint(self, tenant: str, signer: Signer) -> int | None:
        """Sign the tenant's current head; returns its seq (None when there is nothing new to sign)."""
        async with self.engine.begin() as conn:
            head = (await conn.execute(select(audit_heads).where(audit_heads.c.tenant == tenant))).one_or_none()
            if head is None or head.seq == 0:
                return None
            latest = (await conn.execute(select(audit_checkpoints.c.seq).where(audit_checkpoints.c.tenant == tenant)
                                         .order_by(audit_checkpoints.c.seq.desc()).limit(1))).scalar()
            if latest == head.seq:
                return None
            created_at = datetime.now(UTC).isoformat()
            signature = signer.sign(checkpoint_message(tenant, head.seq, head.head_hash, created_at))
            inserted = await conn.execute(self._insert(audit_checkpoints).values(
                tenant=tenant, seq=head.seq, head_hash=head.head_hash, created_at=created_at,
                key_id=signer.key_id, signature=signature).on_conflict_do_nothing())
            return head.seq if inserted.rowcount else None  # another replica signed this head first

    async def verify(self, tenant: str, public_keys: dict[str, Ed25519PublicKey] | None = None) -> Verdict:
        """Recompute the tenant's chain and check its signed checkpoints; name the first record that does not fit.

        The chain may start after seq 1 only where a retention cut in it (wrapper/audit/retention.py)
        removed records 1..first-1 and links to the first record kept.
        """
        expected_seq, prev, checked = 1, GENESIS, 0
        cut_start: tuple[int, str] | None = None  # (seq, prev_hash) of the first record, when it is not 1
        cut_found = False
        async with self.engine.connect() as conn:
            head = (await conn.execute(select(audit_heads).where(audit_heads.c.tenant == tenant))).one_or_none()
            checkpoints = (await conn.execute(select(audit_checkpoints).where(audit_checkpoints.c.tenant == tenant)
                                              .order_by(audit_checkpoints.c.seq))).all()
            problem = _bad_signature(checkpoints, public_keys or {})
            if problem:
                return Verdict(tenant, False, 0, *problem)
            signed_heads = {c.seq: c.head_hash for c in checkpoints}
            result = await conn.stream(select(audit_events).where(audit_events.c.tenant == tenant).order_by(audit_events.c.seq))
            async for row in result:
                if checked == 0 and row.seq > 1:  # the start of a chain after a retention cut
                    expected_seq, prev, cut_start = row.seq, row.prev_hash, (row.seq, row.prev_hash)
                    if signed_heads.get(row.seq - 1, prev) != prev:
                        return Verdict(tenant, False, checked, row.seq,
                                       f"prev_hash does not match the signed checkpoint at {row.seq - 1}")
                if row.seq != expected_seq:
                    return Verdict(tenant, False, checked, expected_seq, f"record {expected_seq} is missing")
                if row.prev_hash != prev:
                    return Verdict(tenant, False, checked, row.seq, "prev_hash does not link to the record before")
                if row_hash(tenant, row.seq, row.prev_hash, row.record) != row.row_hash:
                    return Verdict(tenant, False, checked, row.seq, "the record does not match its hash")
                if column := _column_mismatch(row):
                    return Verdict(tenant, False, checked, row.seq, f"column {column} differs from the hashed record")
                if signed_heads.get(row.seq, row.row_hash) != row.row_hash:
                    return Verdict(tenant, False, checked, row.seq,
                                   f"the chain up to {row.seq} was rewritten after a signed checkpoint")
                if cut_start and not cut_found:
                    cut_found = _is_cut_of(row, cut_start[0] - 1, cut_start[1])
                prev, expected_seq, checked = row.row_hash, expected_seq + 1, checked + 1
        if cut_start and not cut_found:
            return Verdict(tenant, False, checked, 1,
                           f"records 1..{cut_start[0] - 1} are missing (no retention cut in the chain accounts for them)")
        last = expected_seq - 1
        beyond = [seq for seq in signed_heads if seq > last]
        if beyond:
            return Verdict(tenant, False, checked, last + 1, f"record {last + 1} is missing (checkpoint {beyond[0]} signed it)")
        if head is not None and (head.seq != last or head.head_hash != prev):
            return Verdict(tenant, False, checked, last + 1, f"the chain ends at {last} but its head says {head.seq}")
        return Verdict(tenant, True, checked)


def _bad_signature(checkpoints, public_keys: dict[str, Ed25519PublicKey]) -> tuple[int, str] | None:
    for c in checkpoints:
        key = public_keys.get(c.key_id)
        if key is None:
            return c.seq, f"checkpoint {c.seq} is signed by unknown key {c.key_id}"
        if not signature_valid(key, checkpoint_message(c.tenant, c.seq, c.head_hash, c.created_at), c.signature):
            return c.seq, f"checkpoint {c.seq} has an invalid signature"
    return None


def _is_cut_of(row, through_seq: int, last_removed_hash: str) -> bool:
    """Is this row a retention cut that removed records 1..through_seq, the last of them hashing to last_removed_hash?"""
    if '"kind":"retention_cut"' not in row.record:  # canonical JSON: a cheap test before parsing
        return False
    cut = json.loads(row.record)
    return (cut.get("kind"), cut.get("through_seq"), cut.get("last_removed_hash")) == ("retention_cut", through_seq, last_removed_hash)


def _column_mismatch(row) -> str | None:
    """Columns kept beside the record for queries must say what the hashed record says."""
    record = json.loads(row.record)
    if record.get("request_id") != row.request_id:
        return "request_id"
    for column, value in query_columns(record).items():
        if value != getattr(row, column):
            return column
    occurred = datetime.fromisoformat(record["occurred_at"])
    if occurred != (row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=occurred.tzinfo)):
        return "occurred_at"
    return None
