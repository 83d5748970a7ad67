"""The journal of streams in flight: what a dead process left open comes back once, and the file stays small."""

from __future__ import annotations

from datetime import UTC, datetime

from wrapper.audit import journal as journal_module
from wrapper.audit.journal import StreamJournal, spool_stranded
from wrapper.audit.spool import Spool


def provisional(n: int) -> dict:
    return {"event_id": f"e{n}", "request_id": f"r{n}", "tenant": "acme", "occurred_at": datetime.now(UTC),
            "status": 502, "error_code": "gateway_stopped"}


def test_the_streams_left_open_come_back_once_and_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "streams.ndjson"
    first = StreamJournal(path)
    assert first.recover() == []
    for n in range(3):
        first.opened(provisional(n))
    first.closed("e1")
    first.closed("e-unknown")  # a stream that was never journaled: nothing to say
    with path.open("ab") as torn:
        torn.write(b'{"open":{"event_id":"e9"')  # the dying process's last, unfinished write
    # the process dies here: no close
    second = StreamJournal(path)
    spool = Spool(tmp_path / "spool.ndjson")
    assert spool_stranded(second, spool) == 2
    assert [(r["request_id"], r["error_code"]) for r in spool.read()] == [("r0", "gateway_stopped"),
                                                                          ("r2", "gateway_stopped")]
    assert path.read_bytes() == b""  # recovered once: a third start finds nothing
    assert StreamJournal(path).recover() == []


def test_the_journal_is_rewritten_with_only_the_open_streams_once_it_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 2000)
    path = tmp_path / "streams.ndjson"
    journal = StreamJournal(path)
    journal.recover()
    journal.opened(provisional(0))  # a long stream, open throughout
    for n in range(1, 200):
        journal.opened(provisional(n))
        journal.closed(f"e{n}")
    assert path.stat().st_size < 2000 + 400
    assert [r["event_id"] for r in StreamJournal(path).recover()] == ["e0"]
