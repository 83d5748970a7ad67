"""Streams in flight, journaled, so that a stream cut by the gateway's own death still leaves its record.

A stream's events reach the client as they come; its record is committed at its end. If the process dies
in between (SIGKILL, the OOM killer, a segfault), the provider has had the prompt and the client part of an
answer, and nothing would say so. So once a stream starts to flow, a provisional record (502,
`gateway_stopped`, what was known then) is appended to a local journal, and once its real record has been
handed over (committed, or spooled), a line saying so. At the next start, every provisional record without
that line goes to the spool, to be appended like any record that waited for the store.

One write() per line, no fsync: what a killed process wrote stays in the OS's cache and reaches the file, so
this survives the process (what it is for), not a power loss. The file is rewritten with only the open
streams whenever it has grown past a few megabytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from wrapper.audit.spool import Spool

COMPACT_BYTES = 4 * 1024 * 1024


class StreamJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: dict[str, bytes] = {}  # event id -> its line, while its stream runs
        self._fd: int | None = None
        self._size = 0

    def recover(self) -> list[dict]:
        """The provisional records of the streams an earlier process left open; the journal starts empty."""
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        opened: dict[str, dict] = {}
        for line in lines:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line the dying process did not finish: its stream had not started to flow
            if "open" in entry:
                opened[entry["open"]["event_id"]] = entry["open"]
            else:
                opened.pop(entry.get("closed"), None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._size = 0
        return list(opened.values())

    def opened(self, record: dict) -> None:
        line = b'{"open":' + orjson.dumps(record) + b"}\n"  # local and never hashed: orjson, not canonical JSON
        self._open[record["event_id"]] = line
        self._write(line)

    def closed(self, event_id: str) -> None:
        if self._open.pop(event_id, None) is not None:
            self._write(b'{"closed":' + orjson.dumps(event_id) + b"}\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            return  # not started (an app used without its lifespan)
        os.write(self._fd, line)
        self._size += len(line)
        if self._size > COMPACT_BYTES:
            self._compact()

    def _compact(self) -> None:
        """Only the streams still open, written to a new file that replaces the journal at once."""
        fresh = self.path.with_suffix(".new")
        data = b"".join(self._open.values())
        fresh.write_bytes(data)
        os.replace(fresh, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(data)


def spool_stranded(journal: StreamJournal, spool: Spool) -> int:
    """At start: the provisional records of streams the last process died in, spooled (the writer appends them
    before anything newer); how many there were."""
    stranded = journal.recover()
    if stranded:
        spool.append(stranded)
    return len(stranded)
