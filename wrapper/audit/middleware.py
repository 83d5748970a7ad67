"""Every request that reaches the wrapper leaves exactly one audit record, whatever its fate.

The middleware wraps the whole app, so answers, refusals (auth, role, model,
bad input), upstream failures, crashes and client cancellations all pass
through the same place. It holds the response until its record is committed:
a one-part answer's status line and body wait for the commit; a stream's parts
flow at once, but the part that ends it (for an event stream, `data: [DONE]` or
its protocol's own end event, such as the Responses API's `response.completed`)
waits. If the record cannot be committed and the tenant does not allow answering
without one, the client gets 503 (or, once a stream flows, an error in place of
its end).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import orjson

from wrapper.audit.journal import StreamJournal
from wrapper.audit.record import Delivery, build_record
from wrapper.audit.writer import AuditUnavailable, AuditWriter
from wrapper.context import RequestContext, request_context
from wrapper.errors import CLIENT_CLOSED, GatewayError, error_in
from wrapper.observability.tracing import step

logger = logging.getLogger("wrapper.audit")

UNAUDITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes, not requests
_DONE = b"data: [DONE]"
_OVERHEAD_HEADER = b"x-gateway-overhead-ms"


class AuditMiddleware:
    def __init__(self, app, writer: AuditWriter, observers: tuple[Callable[[dict], None], ...] = (),
                 finishers: tuple[Callable[[RequestContext], Awaitable[None] | None], ...] = (),
                 journal: StreamJournal | None = None) -> None:
        self.app = app
        self.writer = writer
        self.journal = journal  # streams in flight: a crash mid-stream still leaves their records
        self.observers = observers  # see every record once it is built (metrics)
        # run once the request has ended, however it ended (admission's settlement); None when there is nothing to do
        self.finishers = finishers
        self._finishing: set[asyncio.Task] = set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED_PATHS:
            await self.app(scope, receive, send)
            return
        ctx = request_context(scope)
        exchange = _Exchange(ctx, Delivery(scope["method"], scope["path"]), self.writer, send, self.observers,
                             self.journal)
        try:
            await self.app(scope, receive, exchange.send)
        except BaseException:
            if not exchange.recorded:
                exchange.delivery.status = CLIENT_CLOSED if exchange.delivery.streamed else 500
                await exchange.record(answering=False)
            self._finish(ctx)
            raise
        if not exchange.recorded:  # a stream the client left before its end
            exchange.delivery.status = CLIENT_CLOSED
            await exchange.record(answering=False)
        self._finish(ctx)  # the outcome is complete now: a stream cut short has been counted

    def _finish(self, ctx: RequestContext) -> None:
        """The finishers' work, in a task of its own: the client's answer never waits on it. A request that holds
        nothing (limits off) costs no task."""
        for finisher in self.finishers:
            work = finisher(ctx)
            if work is not None:
                task = asyncio.get_running_loop().create_task(work)
                self._finishing.add(task)
                task.add_done_callback(self._finishing.discard)


class _Exchange:
    """One response on its way out: hashed as it passes, held until its record is committed."""

    def __init__(self, ctx: RequestContext, delivery: Delivery, writer: AuditWriter, send, observers,
                 journal: StreamJournal | None = None) -> None:
        self.ctx, self.delivery, self.writer, self._send, self.observers = ctx, delivery, writer, send, observers
        self.journal = journal
        self._digest = hashlib.sha256()
        self._start: dict | None = None  # held until the answer is committed, or until it starts to flow
        self.recorded = False
        self._provisional: str | None = None  # the journaled record's event id, while the stream flows

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.delivery.status = message["status"]
            self.delivery.streamed = _is_event_stream(message)
            self._start = message
            if self.delivery.streamed:
                await self._flow()  # an event stream's headers go out at once: time to first token matters
                self._journal_stream()
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        chunk, more = message.get("body", b""), message.get("more_body", False)
        self._digest.update(chunk)
        if self._start is None:  # flowing: a stream, or a long body such as an export
            await self._send_part(message, chunk, more)
        elif more:
            await self._flow()
            await self._send_part(message, chunk, more)
        else:
            await self._send_answer(chunk)

    async def _flow(self) -> None:
        start, self._start = self._start, None
        await self._send(start)

    async def _send_part(self, message, chunk: bytes, more: bool) -> None:
        """Parts pass at once; the one that ends the response (or an event stream's [DONE]) waits for the commit."""
        streamed = self.delivery.streamed
        ends = not more or (streamed and (_DONE in chunk or self._stream_finished()))
        if ends and not self.recorded and not await self.record(answering=True):
            if streamed:  # in place of the event that ends the stream, an error in the route's protocol
                route = self.ctx.route
                chunk = route.error_event(_audit_unavailable()) if route else _audit_unavailable().sse_event()
            else:
                chunk = b"\n" + orjson.dumps(_audit_unavailable().envelope()) + b"\n"
            message = {**message, "body": chunk}
        await self._send(message)

    def _stream_finished(self) -> bool:
        """The stream's own end event (`response.completed`, `message_stop` ...) is the part being sent."""
        stream = self.ctx.outcome.stream
        return stream is not None and stream.done

    async def _send_answer(self, body: bytes) -> None:
        """A one-part answer: its status line and body both wait for the commit (or become a 503)."""
        self.delivery.response_body = body
        waited = time.perf_counter()
        if await self.record(answering=True):
            start = self._start
            _add_overhead(start, time.perf_counter() - waited)  # the commit is the wrapper's time too
        else:
            refusal = _audit_unavailable()
            start = {"type": "http.response.start", "status": refusal.status,
                     "headers": [(b"content-type", b"application/json")]}
            body = orjson.dumps(refusal.envelope())
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    def _journal_stream(self) -> None:
        """The record this stream leaves if the process dies before its end: what was sent where, and that the
        client's stream was cut (502 gateway_stopped)."""
        if self.journal is None:
            return
        cut = Delivery(self.delivery.method, self.delivery.path, status=502, streamed=True,
                       error={"type": "gateway_stopped", "code": "gateway_stopped"})
        try:
            provisional = build_record(self.ctx, cut)
            self.journal.opened(provisional)
        except Exception:  # never the stream's undoing: it would only lack the crash-time record
            logger.exception("could not journal a stream in flight")
            return
        self._provisional = provisional["event_id"]

    async def record(self, answering: bool) -> bool:
        """Commit this request's record; False when the answer must be withheld."""
        try:
            return await self._record(answering)
        finally:
            if self._provisional is not None:  # its own record has been handed over: the journal's is not needed
                self.journal.closed(self._provisional)
                self._provisional = None

    async def _record(self, answering: bool) -> bool:
        self.recorded = True
        delivery = self.delivery
        delivery.completed = time.perf_counter()
        delivery.response_sha256 = self._digest.hexdigest()
        if delivery.status >= 400 and not delivery.streamed:
            delivery.error = error_in(delivery.response_body)
        tenant = self.ctx.tenant
        try:
            record = build_record(self.ctx, delivery)
        except Exception:  # a bug must cost this request its answer (no record, no answer), never the writer
            logger.exception("could not build the audit record of a request")
            return not answering
        for observe in self.observers:
            try:
                observe(record)
            except Exception:  # a metrics bug must never cost a request its answer or its record
                logger.exception("an observer of audit records failed")
        try:
            with step("audit.commit"):
                await self.writer.commit(record, fail_open=bool(tenant and tenant.audit.on_store_failure == "open"))
        except AuditUnavailable:
            return not answering
        return True


def _is_event_stream(start: dict) -> bool:
    return any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in start.get("headers", ()))


def _add_overhead(start: dict, seconds: float) -> None:
    headers = start.get("headers", [])
    for index, (name, value) in enumerate(headers):
        if name == _OVERHEAD_HEADER:
            headers[index] = (name, f"{float(value) + seconds * 1000:.3f}".encode())


def _audit_unavailable() -> GatewayError:
    return GatewayError(503, "The audit log is unavailable, so the gateway may not answer.", code="audit_unavailable")
