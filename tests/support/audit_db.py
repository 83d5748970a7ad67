"""Audit databases for tests: a fresh PostgreSQL database per test, or a SQLite file, migrated."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text

from wrapper.audit.migrate import upgrade_database
from wrapper.audit.store import AuditStore, make_engine

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def as_superuser(statement: str, dsn: str = ADMIN_DSN) -> None:
    """Run SQL as the superuser (the `test` database unless told), from sync code, on a thread's own event loop."""

    async def run() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test."""
    name = f"gw_audit_{uuid.uuid4().hex[:12]}"
    as_superuser(f'CREATE DATABASE "{name}"')
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    as_superuser(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
async def store(request, tmp_path):
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    await upgrade_database(url)
    store = AuditStore(make_engine(url))
    store.url = url
    yield store
    await store.close()


def record(tenant: str, n: int, **extra) -> dict:
    return {"tenant": tenant, "request_id": f"{tenant}-{n}", "occurred_at": datetime.now(UTC), "status": 200,
            "model": "fake-chat", "tokens_in": 11, "tokens_out": 7, "cost": 0.00012, "latency_ms": 14.2, **extra}


async def tamper(store: AuditStore, *statements: str, **params) -> None:
    """Change the log the way a database superuser could: with the append-only triggers out of the way."""
    async with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL session_replication_role = replica"))  # superuser: triggers off
        else:
            for trigger in ("audit_events_no_update", "audit_events_no_delete"):
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
        for statement in statements:
            await conn.execute(text(statement), params)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def query(url: str, statement: str, *args) -> list:
    """Rows of a query on a PostgreSQL audit database, from sync test code."""

    async def run() -> list:
        connection = await asyncpg.connect(_dsn(url))
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def records_of(url: str, request_id: str) -> list[dict]:
    """The audit records of one request id, each with its chain position (tenant, seq)."""
    import json

    rows = query(url, "SELECT tenant, seq, record FROM audit_events WHERE request_id = $1 ORDER BY tenant, seq", request_id)
    return [{**json.loads(row["record"]), "seq": row["seq"]} for row in rows]


def the_record(url: str, request_id: str, wait_seconds: float = 0) -> dict:
    """The one record of a request. Waiting is for requests whose client left: their record follows."""
    import time

    deadline = time.monotonic() + wait_seconds
    while not (records := records_of(url, request_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(records) == 1, records
    return records[0]
