"""Audit records per second on PostgreSQL, in isolation (no HTTP).

First the store alone: appends to one tenant's chain (the contended case) from
16 concurrent tasks, as single-record transactions and as fixed batch sizes.
Then the wrapper's AuditWriter, as requests use it: N concurrent requests each
commit one record and wait for it; the writer's group commit batches whatever
is queued. Prints markdown tables and writes them to bench/results/audit_store.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrapper.audit.migrate import upgrade_database  # noqa: E402
from wrapper.audit.spool import Spool  # noqa: E402
from wrapper.audit.store import AuditStore, make_engine  # noqa: E402
from wrapper.audit.writer import AuditWriter  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("BENCH_AUDIT_SECONDS", 4))
BATCHES = (1, 10, 50, 200)
TASKS = 16
REQUESTS_IN_FLIGHT = (1, 16, 64, 256)


def record(n: int) -> dict:
    return {"tenant": "bench", "request_id": f"r-{n}-{uuid.uuid4().hex[:8]}", "occurred_at": datetime.now(UTC),
            "status": 200, "model": "fake-chat", "tokens_in": 11, "tokens_out": 7, "cost": 0.00012,
            "latency_ms": 14.2, "content_sha256": "0" * 64}


async def rate(store: AuditStore, batch: int) -> float:
    written = 0
    deadline = time.perf_counter() + SECONDS

    async def writer() -> None:
        nonlocal written
        while time.perf_counter() < deadline:
            await store.append([record(i) for i in range(batch)])
            written += batch

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(TASKS)))
    return written / (time.perf_counter() - started)


async def writer_rate(store: AuditStore, in_flight: int, spool: Path) -> tuple[float, float]:
    """Records/s and median wait per record, with `in_flight` requests each committing one record at a time."""
    writer = AuditWriter(store, Spool(spool))
    await writer.start()
    written, waits = 0, []
    deadline = time.perf_counter() + SECONDS

    async def request() -> None:
        nonlocal written
        n = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await writer.commit(record(n), fail_open=False)
            waits.append(time.perf_counter() - started)
            written += 1
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(request() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await writer.close()
    waits.sort()
    return written / elapsed, waits[len(waits) // 2] * 1000


async def main() -> None:
    name = f"gw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        await upgrade_database(url)
        store = AuditStore(make_engine(url))
        rows = [(batch, await rate(store, batch)) for batch in BATCHES]
        spool = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.spool"
        writer_rows = [(n, *await writer_rate(store, n, spool)) for n in REQUESTS_IN_FLIGHT]
        verdict = await store.verify("bench")
        await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    lines = ["| records per transaction | records/s (16 writers, one tenant) | vs goal 2,000/s |", "|---:|---:|---:|"]
    lines += [f"| {batch} | {per_second:,.0f} | {per_second / 2000:.2f}x |" for batch, per_second in rows]
    lines += ["", "The wrapper's AuditWriter (group commit), each request waiting for its own record:", "",
              "| requests in flight | records/s | median wait per record, ms | vs goal 2,000/s |", "|---:|---:|---:|---:|"]
    lines += [f"| {n} | {per_second:,.0f} | {wait:.2f} | {per_second / 2000:.2f}x |" for n, per_second, wait in writer_rows]
    report = (
        f"# Audit store throughput\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"PostgreSQL on loopback (default durability: synchronous_commit on), {SECONDS:.0f} s per row. "
        f"Afterwards the chain of {verdict.checked:,} records verified: {'intact' if verdict.ok else verdict.reason}.\n\n"
        + "\n".join(lines) + "\n"
    )
    print(report)
    (Path(__file__).parent / "results" / "audit_store.md").write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
