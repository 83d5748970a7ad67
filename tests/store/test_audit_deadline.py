"""The audit commit deadline: a locked chain head costs each request at most the deadline, then its tenant's policy
decides (fail closed: refused; fail open: answered, its record spooled), and every record is in the chain once the
lock is gone. On real PostgreSQL (a row lock on the head) and SQLite (another writer holding the database)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import asyncpg
import pytest

from tests.support.audit_db import record as bare_record
from wrapper.audit.migrate import upgrade_database
from wrapper.audit.spool import Spool
from wrapper.audit.store import AuditStore, make_engine
from wrapper.audit.writer import AuditUnavailable, AuditWriter

DEADLINE = 0.5


def record(tenant: str, n: int) -> dict:
    return bare_record(tenant, n, event_id=f"event-{tenant}-{n}")  # as every record built for a request has
LOCK_SECONDS = 4.0


class _Lock:
    """Another session holding what an append needs, as a long transaction or a stuck migration would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: asyncpg.Connection | None = None
        self._sqlite: sqlite3.Connection | None = None

    async def take(self) -> None:
        if self.url.startswith("postgresql"):
            self._pg = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
            await self._pg.execute("BEGIN")
            await self._pg.execute("SELECT * FROM audit_heads FOR UPDATE")
        else:
            self._sqlite = sqlite3.connect(self.url.split(":///", 1)[1], isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")

    async def release(self) -> None:
        if self._pg is not None:
            await self._pg.execute("ROLLBACK")
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()


@pytest.fixture(params=["postgresql", "sqlite"])
async def writer(request, tmp_path):
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    await upgrade_database(url)
    store = AuditStore(make_engine(url), DEADLINE)
    writer = AuditWriter(store, Spool(tmp_path / "spool.ndjson"), commit_timeout=DEADLINE)
    writer.url = url
    await writer.start()
    yield writer
    await writer.close()
    await store.close()


async def _timed_commit(writer: AuditWriter, rec: dict, fail_open: bool) -> tuple[str, float]:
    started = time.monotonic()
    try:
        await writer.commit(rec, fail_open)
        outcome = "answered"
    except AuditUnavailable:
        outcome = "refused"
    return outcome, time.monotonic() - started


async def test_a_locked_head_costs_each_request_at_most_the_deadline_and_no_record_is_lost(writer):
    await writer.commit(record("strict", 0), fail_open=False)  # both chains exist before the lock
    await writer.commit(record("lenient", 0), fail_open=True)
    lock = _Lock(writer.url)
    await lock.take()
    try:
        # Requests keep coming for the whole lock, a few at a time, from both tenants.
        results = []
        n = 0
        until = time.monotonic() + LOCK_SECONDS - 0.5
        while time.monotonic() < until:
            n += 1
            batch = [_timed_commit(writer, record("strict", n), False), _timed_commit(writer, record("lenient", n), True)]
            results.append(asyncio.gather(*batch))
            await asyncio.sleep(0.1)
        outcomes = [pair for pairs in await asyncio.gather(*results) for pair in pairs]
    finally:
        await lock.release()

    strict, lenient = outcomes[0::2], outcomes[1::2]
    assert {o for o, _ in strict} == {"refused"} and {o for o, _ in lenient} == {"answered"}
    slowest = max(took for _, took in outcomes)
    assert slowest < DEADLINE + 0.4, f"a request waited {slowest:.2f} s on a locked store (deadline {DEADLINE} s)"

    # Once the lock is gone the spool is replayed with no request needed, every record once, the chains whole.
    give_up = time.monotonic() + 10
    while writer.spool.pending and time.monotonic() < give_up:
        await asyncio.sleep(0.1)
    assert not writer.spool.pending
    for tenant in ("strict", "lenient"):
        verdict = await writer.store.verify(tenant, {})
        assert verdict.ok and verdict.checked == n + 1, verdict
    await writer.commit(record("strict", n + 1), fail_open=False)  # and the store is the writer's again
