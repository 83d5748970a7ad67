"""Retention: remove a tenant's expired records as a prefix of its chain, and say so in the chain.

The log is append-only, so the cut lifts the delete protection for one transaction only: it
deletes records 1..N, restores the protection and appends a `retention_cut` record naming N and
the hash of record N. `AuditStore.verify` accepts a chain that starts at N+1 only if such a
record links to it, so any other removal still shows. A legal hold blocks every cut.

Lifting the protection needs the owner of `audit_events` (PostgreSQL: ALTER TABLE ... DISABLE
TRIGGER), not the wrapper's INSERT/SELECT role: run the cut with the role that runs migrations.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from wrapper.audit.schema import audit_events
from wrapper.audit.store import AuditStore
from wrapper.config import AuditPolicy

# The triggers of migration 0001 that refuse DELETE (PostgreSQL: UPDATE or DELETE).
POSTGRES_DELETE_TRIGGER = "audit_events_no_update_delete"
SQLITE_DELETE_TRIGGER = "audit_events_no_delete"


class RetentionRefused(Exception):
    """The tenant's policy, or the state of its chain, does not allow a cut."""


@dataclass(frozen=True)
class CutResult:
    tenant: str
    removed: int
    through_seq: int | None  # the last removed seq (None: nothing to cut)
    cutoff: datetime
    dry_run: bool


async def cut_expired(store: AuditStore, tenant: str, policy: AuditPolicy,
                      now: datetime | None = None, dry_run: bool = False) -> CutResult:
    """Remove the tenant's records older than its retention, oldest first, up to the first one still kept."""
    refuse_by_policy(tenant, policy)
    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(days=policy.retention_days)).astimezone(UTC)
    if dry_run:
        async with store.engine.connect() as conn:
            through, removed = await _expired_prefix(conn, tenant, cutoff)
        return CutResult(tenant, removed, through, cutoff, dry_run=True)

    async with store.engine.begin() as conn:
        await _hold_the_writers(conn, tenant)
        through, removed = await _expired_prefix(conn, tenant, cutoff)
        if not removed:
            return CutResult(tenant, 0, None, cutoff, dry_run=False)
        last_removed_hash = (await conn.execute(
            select(audit_events.c.row_hash).where(audit_events.c.tenant == tenant, audit_events.c.seq == through))).scalar()
        if last_removed_hash is None:
            raise RetentionRefused(f"tenant {tenant}: record {through} is missing; run `gateway audit verify` first")
        async with _delete_protection_lifted(conn):
            await conn.execute(audit_events.delete().where(audit_events.c.tenant == tenant, audit_events.c.seq <= through))
        await store.append_in(conn, [{
            "kind": "retention_cut", "tenant": tenant, "request_id": f"retention-cut-{uuid.uuid4().hex}",
            "occurred_at": now, "through_seq": through, "last_removed_hash": last_removed_hash,
            "removed": removed, "cutoff": cutoff.isoformat(), "retention_days": policy.retention_days,
        }])
    return CutResult(tenant, removed, through, cutoff, dry_run=False)


def refuse_by_policy(tenant: str, policy: AuditPolicy) -> None:
    """Raise RetentionRefused when the tenant's policy allows no cut at all."""
    if policy.legal_hold:
        raise RetentionRefused(f"tenant {tenant} is under legal hold (audit.legal_hold): no record may be removed")
    if policy.retention_days is None:
        raise RetentionRefused(f"tenant {tenant} has no audit.retention_days: its records are kept forever, nothing to cut")


async def _expired_prefix(conn: AsyncConnection, tenant: str, cutoff: datetime) -> tuple[int | None, int]:
    """The last seq to remove and how many records that removes: everything before the first record kept."""
    events = audit_events.c
    mine = events.tenant == tenant
    first_kept = (await conn.execute(select(func.min(events.seq)).where(mine, events.occurred_at >= cutoff))).scalar()
    if first_kept is None:  # every record is older than the cutoff: all of them go
        through = (await conn.execute(select(func.max(events.seq)).where(mine))).scalar()
    else:
        through = first_kept - 1
    removed = 0
    if through:
        removed = (await conn.execute(select(func.count()).where(mine, events.seq <= through))).scalar()
    return (through if removed else None), removed


async def _hold_the_writers(conn: AsyncConnection, tenant: str) -> None:
    """Keep appenders out before touching audit_events.

    Appenders lock heads first, then write events; a batch may hold the heads of several tenants.
    Taking the heads table first (and only then the events table) leaves no lock cycle with them.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("LOCK TABLE audit_heads IN EXCLUSIVE MODE"))
    else:  # a write as the first statement: SQLite's single-writer lock, and the transaction begins here
        await conn.execute(text("UPDATE audit_heads SET seq = seq WHERE tenant = :tenant"), {"tenant": tenant})


@asynccontextmanager
async def _delete_protection_lifted(conn: AsyncConnection):
    """Within the caller's transaction: the delete trigger off, then back exactly as it was.

    On an error the body raises here, the trigger is not restored, and the rollback restores it.
    """
    if conn.dialect.name == "postgresql":  # transactional DDL; needs the table's owner
        await conn.execute(text(f"ALTER TABLE audit_events DISABLE TRIGGER {POSTGRES_DELETE_TRIGGER}"))
        yield
        await conn.execute(text(f"ALTER TABLE audit_events ENABLE TRIGGER {POSTGRES_DELETE_TRIGGER}"))
        return
    # SQLite has no DISABLE TRIGGER: drop it and create it again from its own SQL (that of migration 0001).
    trigger_sql = (await conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
                                      {"name": SQLITE_DELETE_TRIGGER})).scalar()
    if trigger_sql is None:
        raise RetentionRefused(f"the delete protection of audit_events ({SQLITE_DELETE_TRIGGER}) is missing; "
                               "run `gateway db upgrade` and `gateway audit verify`")
    await conn.execute(text(f"DROP TRIGGER {SQLITE_DELETE_TRIGGER}"))
    yield
    await conn.execute(text(trigger_sql))
