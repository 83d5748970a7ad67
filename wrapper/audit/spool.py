"""A local, append-only file where records wait while the audit store is unreachable.

One canonical JSON record per line, fsync'd before the request is answered, so
a record the client was answered on survives a crash of the wrapper. Records are
replayed in file order once the store answers again; each carries a unique
event_id, so a replay cut short by a crash is resumed without writing any twice.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import orjson

from wrapper.audit.chain import canonical, jsonable


class Spool:
    """Owned by one writer: whether records wait is read from disk once, then kept in step by append and clear."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.pending = path.stat().st_size > 0  # left by an earlier run: replayed first
        except FileNotFoundError:
            self.pending = False

    def append(self, records: list[dict]) -> None:
        """Write and fsync; raises OSError when the disk refuses (then the records are not safe)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(canonical(jsonable(record)) + "\n" for record in records).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.pending = True  # even if the write fails part-way: whatever landed is replayed (read skips a torn line)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict]:
        """Every spooled record, in order, with occurred_at a datetime again (as the store expects)."""
        records = []
        with self.path.open("rb") as spooled:
            for line in spooled:
                if not line.endswith(b"\n"):
                    break  # a torn last line: its request was never answered (the fsync did not return)
                record = orjson.loads(line)
                record["occurred_at"] = datetime.fromisoformat(record["occurred_at"])
                records.append(record)
        return records

    def clear(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.pending = False
