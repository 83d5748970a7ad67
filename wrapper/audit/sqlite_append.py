"""SQLite (the embedded default): append a batch in one transaction, on one thread of its own.

Through SQLAlchemy's async engine each statement of a batch crossed to aiosqlite's thread and back,
about fifteen round trips per batch: at c=1 the audit commit was most of a 3.6 ms hop. Here a batch is
one hop to a thread that owns one sqlite3 connection: BEGIN IMMEDIATE (the write lock first, so the
head read is the head, across processes too: the same guarantee as the row lock on PostgreSQL), the
head, the rows, the head moved, COMMIT. Values are bound as SQLAlchemy binds them (its SQLite type
processors), so everything that reads the store through SQLAlchemy reads the same rows.

Durability: WAL with synchronous=FULL, as the engine sets it (store.make_engine): a commit is on disk
before the answer, so a record survives the process, the OS and power loss. NORMAL would cost ~15 µs
instead of ~250-300 µs here but can lose the last commits on an OS crash or power loss (never on a
crash of the process alone); an answered request without its record is what the audit log exists to
prevent, so FULL it is.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.dialects import sqlite

from wrapper.audit.chain import GENESIS, chain_rows
from wrapper.audit.schema import audit_events

BUSY_TIMEOUT_MS = 30_000  # as the engine's connect timeout: another writer's transaction is waited for
_DIALECT = sqlite.dialect()
_COLUMNS = tuple(audit_events.c.keys())
_INSERT = f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_BINDS = tuple(column.type.dialect_impl(_DIALECT).bind_processor(_DIALECT) for column in audit_events.c)


class SqliteAppender:
    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite")
        self._connection: sqlite3.Connection | None = None

    async def append(self, records: list[dict]) -> list[tuple[str, int]]:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._append, records)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._connection = connection
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _append(self, records: list[dict]) -> list[tuple[str, int]]:
        by_tenant: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            by_tenant[record["tenant"]].append(record)
        placed: dict[int, tuple[str, int]] = {}
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            for tenant in sorted(by_tenant):
                connection.execute("INSERT OR IGNORE INTO audit_heads (tenant, seq, head_hash) VALUES (?, 0, ?)",
                                   (tenant, GENESIS))
                seq, head_hash = connection.execute("SELECT seq, head_hash FROM audit_heads WHERE tenant = ?",
                                                    (tenant,)).fetchone()
                rows = chain_rows(tenant, seq, head_hash, by_tenant[tenant])
                connection.executemany(_INSERT, [_bound(row) for row in rows])
                connection.execute("UPDATE audit_heads SET seq = ?, head_hash = ? WHERE tenant = ?",
                                   (rows[-1]["seq"], rows[-1]["row_hash"], tenant))
                for record, row in zip(by_tenant[tenant], rows):
                    placed[id(record)] = (tenant, row["seq"])
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            else:  # the connection itself may be broken: open a new one next time
                self._close()
            raise
        return [placed[id(record)] for record in records]


def _bound(row: dict) -> tuple:
    return tuple(bind(row.get(name)) if bind and row.get(name) is not None else row.get(name)
                 for name, bind in zip(_COLUMNS, _BINDS))
