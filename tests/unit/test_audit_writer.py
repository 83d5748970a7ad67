"""The audit writer cannot be stopped by a record, and a stopped writer fails requests at once instead of hanging them."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.audit_db import record
from wrapper.audit.migrate import upgrade_database
from wrapper.audit.spool import Spool
from wrapper.audit.store import AuditStore, make_engine
from wrapper.audit.writer import AuditUnavailable, AuditWriter


@pytest.fixture
async def writer(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await upgrade_database(url)
    store = AuditStore(make_engine(url))
    writer = AuditWriter(store, Spool(tmp_path / "spool.ndjson"))
    await writer.start()
    yield writer
    await writer.close()
    await store.close()


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_a_record_that_cannot_be_written_costs_only_its_own_request(writer):
    # Neither can be put in canonical JSON (too deep for it; a set): not in the store, not in the spool either.
    with pytest.raises(AuditUnavailable):
        await writer.commit(record("acme", 1, content={"request": nested(5000)}), fail_open=False)
    with pytest.raises(AuditUnavailable):
        await writer.commit(record("acme", 2, content={"request": {1, 2}}), fail_open=True)
    # The writer goes on: the next records are written, several at once too.
    await asyncio.gather(*(writer.commit(record("acme", n), fail_open=False) for n in range(3, 8)))
    assert writer.alive
    verdict = await writer.store.verify("acme", {})
    assert verdict.checked == 5


async def test_a_stopped_writer_refuses_at_once_and_says_so(writer):
    writer._task.cancel()  # however it ended: a bug, a cancellation
    await asyncio.sleep(0.05)
    assert not writer.alive
    started = time.monotonic()
    with pytest.raises(AuditUnavailable):
        await writer.commit(record("acme", 1), fail_open=True)
    assert time.monotonic() - started < 0.5
