"""Read the audit log: filtered, paged listings and the records of one request.

The tenant restriction is the isolation boundary between tenants, so it is a
WHERE clause of every statement here, never a filter applied to rows afterwards.
Pages use keyset pagination on (tenant, seq): the cursor names the last row
returned, so rows appended while a client pages are neither repeated nor
skipped. Times are compared in UTC (SQLite keeps UTC wall time, no offset).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from wrapper.audit.schema import audit_events
from wrapper.errors import bad_request

MAX_LIMIT = 1000


@dataclass(frozen=True)
class EventFilter:
    """Which events to list. tenants None means every tenant; an empty list means none."""

    tenants: list[str] | None = None
    since: datetime | None = None  # inclusive, on occurred_at (request arrival)
    until: datetime | None = None  # exclusive
    user: str | None = None
    endpoint: str | None = None
    model: str | None = None
    status: int | None = None
    request_id: str | None = None


async def list_events(engine: AsyncEngine, flt: EventFilter, cursor: str | None = None,
                      limit: int = 100) -> tuple[list[dict], str | None]:
    """One page of events in (tenant, seq) order, and the cursor of the next page (None at the end)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor is not None else None
    statement = _filtered(flt)
    if flt.tenants is not None and not flt.tenants:
        return [], None
    if after is not None:
        statement = statement.where(tuple_(audit_events.c.tenant, audit_events.c.seq) > tuple_(*after))
    statement = statement.order_by(audit_events.c.tenant, audit_events.c.seq).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    events = [event_of(row) for row in rows[:limit]]
    more = len(rows) > limit
    return events, (encode_cursor(events[-1]["tenant"], events[-1]["seq"]) if more else None)


async def events_for_request(engine: AsyncEngine, request_id: str, tenants: list[str] | None) -> list[dict]:
    """Every event of a request id (ids are client-supplied and may repeat), within the given tenants."""
    statement = _filtered(EventFilter(tenants=tenants, request_id=request_id))
    if tenants is not None and not tenants:
        return []
    async with engine.connect() as conn:
        rows = (await conn.execute(statement.order_by(audit_events.c.tenant, audit_events.c.seq))).all()
    return [event_of(row) for row in rows]


def _filtered(flt: EventFilter) -> Select:
    columns = audit_events.c
    statement = select(columns.tenant, columns.seq, columns.request_id, columns.occurred_at,
                       columns.record, columns.prev_hash, columns.row_hash)
    if flt.tenants is not None:
        statement = statement.where(columns.tenant.in_(list(flt.tenants)))
    if flt.since is not None:
        statement = statement.where(columns.occurred_at >= in_utc(flt.since, "since"))
    if flt.until is not None:
        statement = statement.where(columns.occurred_at < in_utc(flt.until, "until"))
    for column, value in ((columns.user_id, flt.user), (columns.endpoint, flt.endpoint),
                          (columns.model, flt.model), (columns.status, flt.status),
                          (columns.request_id, flt.request_id)):
        if value is not None:
            statement = statement.where(column == value)
    return statement


def event_of(row) -> dict:
    # orjson, not json: a record written before bodies were bounded may nest deeper than json's recursion allows.
    return {"tenant": row.tenant, "seq": row.seq, "request_id": row.request_id,
            "occurred_at": as_utc(row.occurred_at).isoformat(), "record": orjson.loads(row.record),
            "prev_hash": row.prev_hash, "row_hash": row.row_hash}


def in_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must carry a time zone, e.g. 2025-01-31T00:00:00Z")
    return moment.astimezone(UTC)


def as_utc(stored: datetime) -> datetime:
    """A stored occurred_at as an aware UTC time (SQLite returns UTC wall time without an offset)."""
    return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)


def parse_time(text: str, name: str) -> datetime:
    """An ISO 8601 time from a user (CLI flag, query parameter), in UTC; without an offset it means UTC."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        example = "e.g. 2025-01-31 or 2025-01-31T12:00:00+00:00"
        raise ValueError(f"{name} is not an ISO 8601 time ({example}): {text[:64]!r}") from None
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the first representable UTC time
        raise ValueError(f"{name} is outside the years 1 to 9999 in UTC: {text[:64]!r}") from None


def text_params(query: Mapping[str, str], *also: str) -> None:
    """Query parameters (and path values) are text PostgreSQL can hold: a NUL in one is the client's 400, not a 500."""
    for name, value in (*query.items(), *(("path", value) for value in also)):
        if "\x00" in name or "\x00" in value:
            raise bad_request(f"The parameter {name[:64]!r} contains a NUL character.", param=name[:64])


def time_param(value: str | None, name: str) -> datetime | None:
    """An optional time query parameter; a bad one is the client's 400."""
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except ValueError as exc:
        raise bad_request(str(exc), param=name) from None


def encode_cursor(tenant: str, seq: int) -> str:
    raw = json.dumps([tenant, seq], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """The (tenant, seq) a cursor names; ValueError for anything this module did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tenant, seq = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise ValueError("malformed cursor: pass back the next_cursor of the previous page unchanged") from None
    if not isinstance(tenant, str) or "\x00" in tenant or type(seq) is not int or not 0 <= seq < 2**63:
        raise ValueError("malformed cursor: pass back the next_cursor of the previous page unchanged")
    return tenant, seq
