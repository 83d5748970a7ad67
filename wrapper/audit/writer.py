"""Group commit: many requests' records in one transaction, each request waiting for its own.

Requests hand their record to `commit` and wait. One task takes everything
queued so far and appends it in a single transaction, so while one batch
commits the next one gathers: throughput grows with load, and a lone request
waits for just one small transaction.

When the store fails, records go to the local spool (they are replayed, in
order, before anything newer once the store answers again) and `commit` tells
each request whether it may be answered: always for a tenant that chose
fail-open, never (AuditUnavailable, a 503) for one that did not.

No request waits on the store for longer than the commit deadline
(GATEWAY_AUDIT_COMMIT_TIMEOUT_SECONDS, from the moment its record is handed
over): a batch is given until its oldest record's deadline, then spooled. A
store that failed is not tried again for a second; meanwhile batches go
straight to the spool, so a locked or black-holed database costs one deadline,
not one per batch.

The writer cannot be stopped by a record: whatever goes wrong with one batch
is that batch's requests' error (503), and the next batch is written. Should
its task end anyway, `alive` says so (the health probes report it) and every
request fails at once with 503 instead of waiting for a commit that never comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson
from sqlalchemy import select

from wrapper.audit.schema import audit_events
from wrapper.audit.spool import Spool
from wrapper.audit.store import AuditStore

logger = logging.getLogger("wrapper.audit")

MAX_BATCH = 500
REPLAY_RETRY_SECONDS = 1.0  # how soon a store that failed is tried again
DEFAULT_COMMIT_TIMEOUT_SECONDS = 2.0
WEDGED_AFTER_SECONDS = 10.0  # beyond the deadline: only a bug, or a driver deaf to cancellation, takes this long


class AuditUnavailable(Exception):
    """The record could not be committed, and the tenant does not allow answering without it."""


@dataclass
class _Pending:
    record: dict
    fail_open: bool
    committed: asyncio.Future
    deadline: float  # loop time by which it is committed or spooled


class AuditWriter:
    def __init__(self, store: AuditStore, spool: Spool,
                 commit_timeout: float = DEFAULT_COMMIT_TIMEOUT_SECONDS) -> None:
        self.store = store
        self.spool = spool
        self.commit_timeout = commit_timeout
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._store_down = False
        self._retry_at = 0.0  # monotonic: while down, the store is not tried before this
        self._busy_since: float | None = None  # when the batch (or replay) in the works was taken up

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        self._task.add_done_callback(self._ended)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        """Write everything still queued, then stop."""
        if self._task is None:
            return
        if self.alive:
            await self._queue.join()
        task, self._task = self._task, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _ended(self, task: asyncio.Task) -> None:
        if self._task is not task:
            return  # closed on purpose
        error = None if task.cancelled() else task.exception()
        logger.critical("the audit writer stopped (%s): every request is refused until the process restarts",
                        type(error).__name__ if error else "cancelled")
        while not self._queue.empty():
            _settle(self._queue.get_nowait().committed, AuditUnavailable())

    async def commit(self, record: dict, fail_open: bool) -> None:
        """Return once the record is durable; raise AuditUnavailable when the request must not be answered."""
        if not self.alive:
            raise AuditUnavailable()
        loop = asyncio.get_running_loop()
        pending = _Pending(record, fail_open, loop.create_future(), loop.time() + self.commit_timeout)
        pending.committed.add_done_callback(_retrieve)  # no warning when the waiter was cancelled
        self._queue.put_nowait(pending)
        # A request cancelled while waiting still has its record written: the record is the queue's now, and
        # the writer settles only futures that are still waited for.
        await pending.committed

    @property
    def wedged(self) -> bool:
        """Alive but stuck: a batch (or a replay), each bounded by the deadline, in the works for far longer."""
        busy_since = self._busy_since
        return (self.alive and busy_since is not None
                and time.monotonic() - busy_since > self.commit_timeout + WEDGED_AFTER_SECONDS)

    @property
    def store_down(self) -> bool:
        """The last write to the store failed (records are being spooled)."""
        return self._store_down

    async def _run(self) -> None:
        while True:
            self._busy_since = None
            try:
                first = await asyncio.wait_for(self._queue.get(), REPLAY_RETRY_SECONDS if self.spool.pending else None)
            except TimeoutError:
                if time.monotonic() >= self._retry_at:
                    self._busy_since = time.monotonic()
                    await self._replay_bounded()  # nothing new, but spooled records are waiting for the store
                continue
            self._busy_since = time.monotonic()
            # One turn of the event loop before the batch is taken: the requests whose answers arrived in the same
            # turn join it. At c=8 that halves the transactions (and their CPU) for a few µs of latency.
            await asyncio.sleep(0)
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # a bug of this batch's: its requests get 503, the writer goes on with the next
                logger.exception("could not write a batch of %d audit records", len(batch))
                for pending in batch:
                    _settle(pending.committed, AuditUnavailable())
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Pending]) -> None:
        if self.spool.pending and time.monotonic() < self._retry_at:
            # The store failed a moment ago and records wait for it: nobody waits on it again until it is retried.
            # (A record that could not be written at all is not spooled either: the store is tried at once.)
            self._spool(batch)
            return
        try:
            async with asyncio.timeout_at(batch[0].deadline):  # the oldest's: the queue is first in, first out
                await self._append([p.record for p in batch])
        except Exception as exc:  # the store is down, refusing or too slow: no record may be lost
            self._note_store_down(exc)
            self._spool(batch)
            return
        self._note_store_up()
        for pending in batch:
            _settle(pending.committed)

    async def _append(self, records: list[dict]) -> None:
        for attempt in (1, 2):
            try:
                if self.spool.pending and not await self._replay():
                    raise ConnectionError("the audit store is still unavailable")
                await self.store.append(records)
                return
            except Exception:
                if attempt == 2 or self._store_down:
                    raise
                # Pooled connections may be stale after a database restart: drop them, try once more.
                await self.store.engine.dispose()

    def _spool(self, batch: list[_Pending]) -> None:
        for pending in batch:
            if not pending.fail_open:
                # The client will get 503 instead of the answer: the record says so.
                pending.record.update(status=503, outcome="error", error_type="service_unavailable",
                                      error_code="audit_unavailable")
        try:
            self.spool.append([p.record for p in batch])
        except Exception:  # a full disk, or a record that cannot be written at all
            logger.exception("the audit spool cannot be written either: refusing these requests")
            for pending in batch:
                _settle(pending.committed, AuditUnavailable())
            return
        for pending in batch:
            _settle(pending.committed, None if pending.fail_open else AuditUnavailable())

    async def _replay_bounded(self) -> None:
        try:
            async with asyncio.timeout(self.commit_timeout):
                await self._replay()
        except TimeoutError as exc:  # what was appended stays; the rest is tried again later
            self._note_store_down(exc)

    async def _replay(self) -> bool:
        """Append every spooled record, oldest first, skipping any already in the store; True when the spool is empty."""
        if not self.spool.pending:
            return True
        try:
            records = self.spool.read()
            for start in range(0, len(records), MAX_BATCH):
                chunk = records[start:start + MAX_BATCH]
                written = await self._already_written(chunk)
                await self.store.append([r for r in chunk if r["event_id"] not in written])
        except Exception as exc:
            self._note_store_down(exc)
            return False
        self.spool.clear()
        logger.warning("replayed %d spooled audit records", len(records))
        self._note_store_up()
        return True

    async def _already_written(self, records: list[dict]) -> set[str]:
        """Event ids of these records already in the store (a replay cut short by a crash)."""
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(select(audit_events.c.record)
                                      .where(audit_events.c.request_id.in_({r["request_id"] for r in records})))
            return {orjson.loads(row.record).get("event_id") for row in rows}

    def _note_store_up(self) -> None:
        if self._store_down:
            logger.warning("the audit store is available again")
            self._store_down = False

    def _note_store_down(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + REPLAY_RETRY_SECONDS
        if not self._store_down:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer within {self.commit_timeout:g} s"
            logger.error("the audit store is unavailable (%s); spooling records", reason)
            self._store_down = True


async def audit_state(writer: AuditWriter, store: AuditStore, config) -> str:
    """For /readyz: `ok`; `spooling` (the store is unavailable: fail-open tenants are answered, their records
    spooled; fail-closed ones get 503); `unavailable` (and every tenant fails closed: nobody can be answered).
    A replica stays ready while it can answer some tenant: with one database behind every replica, taking them
    all out of the load balancer would turn the fail-open tenants' outage-proof answers into refused connections."""
    if not writer.store_down and await store.reachable(writer.commit_timeout):
        return "ok"
    every_tenant_closed = all(tenant.audit.on_store_failure != "open" for tenant in config.tenants.values())
    return "unavailable" if every_tenant_closed else "spooling"


def _settle(future: asyncio.Future, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
