"""The audit log's query and export layer, on PostgreSQL and SQLite: filters, tenant isolation,
keyset paging, and NDJSON exports that anyone holding the public key can verify."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.support.audit_db import record
from tests.support.processes import BIN, ROOT
from wrapper.audit.chain import GENESIS, row_hash
from wrapper.audit.export import export_lines, manifest_message, verify_export
from wrapper.audit.query import EventFilter, encode_cursor, events_for_request, list_events
from wrapper.audit.signing import Signer
from wrapper.audit.store import AuditStore, make_engine

BASE = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

# (tenant, user, endpoint, model, status, request_id or None for "<tenant>-<n>", hours after BASE)
ROWS = [
    ("acme", "alice", "chat", "m1", 200, None, 0),
    ("acme", "bob", "chat", "m2", 429, None, 1),
    ("globex", "alice", "chat", "m1", 200, "shared", 1),
    ("acme", "alice", "search", "m2", 200, None, 2),
    ("acme", "alice", "chat", "m1", 500, "shared", 3),
    ("globex", "mallory", "search", "m2", 500, "globex-only", 3),
    ("globex", "bob", "chat", "m1", 200, None, 4),
    ("acme", "carol", "search", "m1", 200, None, 4),
    ("acme", "bob", "chat", "m1", 200, None, 5),
    ("globex", "alice", "chat", "m1", 429, None, 6),
]


async def seed(store) -> list[dict]:
    """Append ROWS; returns each as the fields a filter sees, with its (tenant, seq)."""
    records = [record(t, n, user=u, endpoint=e, model=m, status=s, occurred_at=BASE + timedelta(hours=h),
                      **({"request_id": rid} if rid else {}))
               for n, (t, u, e, m, s, rid, h) in enumerate(ROWS, 1)]
    placed = await store.append(records)
    return [{"tenant": t, "seq": seq, "user": r["user"], "endpoint": r["endpoint"], "model": r["model"],
             "status": r["status"], "request_id": r["request_id"], "occurred_at": r["occurred_at"]}
            for r, (t, seq) in zip(records, placed, strict=True)]


def expected(rows: list[dict], flt: EventFilter) -> list[tuple[str, int]]:
    """What a filter must return, computed in Python."""
    def keep(r):
        return ((flt.tenants is None or r["tenant"] in flt.tenants)
                and (flt.since is None or r["occurred_at"] >= flt.since)
                and (flt.until is None or r["occurred_at"] < flt.until)
                and all(getattr(flt, f) in (None, r[f]) for f in ("user", "endpoint", "model", "status", "request_id")))
    return sorted((r["tenant"], r["seq"]) for r in rows if keep(r))


async def every_page(engine, flt: EventFilter, limit: int) -> list[dict]:
    events, cursor = await list_events(engine, flt, limit=limit)
    while cursor:
        page, cursor = await list_events(engine, flt, cursor, limit)
        assert page, "a cursor is only returned when there is more"
        events += page
    return events


def positions(events: list[dict]) -> list[tuple[str, int]]:
    return [(e["tenant"], e["seq"]) for e in events]


# ---- listing and filters ----

async def test_an_event_carries_its_chain_position_hashes_and_parsed_record(store):
    await seed(store)
    events, cursor = await list_events(store.engine, EventFilter(tenants=["acme"], request_id="shared"))
    assert cursor is None and len(events) == 1
    event = events[0]
    assert set(event) == {"tenant", "seq", "request_id", "occurred_at", "record", "prev_hash", "row_hash"}
    assert (event["tenant"], event["seq"], event["request_id"]) == ("acme", 4, "shared")
    assert datetime.fromisoformat(event["occurred_at"]) == BASE + timedelta(hours=3)
    assert event["occurred_at"].endswith("+00:00")
    assert event["record"]["user"] == "alice" and event["record"]["status"] == 500
    assert len(event["prev_hash"]) == len(event["row_hash"]) == 64


@pytest.mark.parametrize("filters, acme_seqs", [
    ({}, [1, 2, 3, 4, 5, 6]),
    ({"user": "alice"}, [1, 3, 4]),
    ({"endpoint": "search"}, [3, 5]),
    ({"model": "m2"}, [2, 3]),
    ({"status": 500}, [4]),
    ({"request_id": "shared"}, [4]),
    ({"since": BASE + timedelta(hours=2)}, [3, 4, 5, 6]),
    ({"until": BASE + timedelta(hours=2)}, [1, 2]),
    ({"since": BASE + timedelta(hours=1), "until": BASE + timedelta(hours=4)}, [2, 3, 4]),
    # The same instants in another zone: bounds are compared as instants.
    ({"since": (BASE + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5, minutes=30))),
      "until": (BASE + timedelta(hours=4)).astimezone(timezone(timedelta(hours=-7)))}, [2, 3, 4]),
    ({"user": "alice", "endpoint": "chat", "model": "m1"}, [1, 4]),
    ({"user": "alice", "status": 200, "until": BASE + timedelta(hours=3)}, [1, 3]),
    ({"user": "mallory"}, []),  # exists only in globex
    ({"request_id": "globex-only"}, []),
])
async def test_each_filter_and_combinations_within_one_tenant(store, filters, acme_seqs):
    await seed(store)
    events, cursor = await list_events(store.engine, EventFilter(tenants=["acme"], **filters))
    assert positions(events) == [("acme", seq) for seq in acme_seqs] and cursor is None


async def test_every_combination_of_filters_matches_python_and_never_crosses_tenants(store):
    rows = await seed(store)
    choices = {
        "tenants": [None, ["acme"], ["globex"], ["acme", "globex"], ["initech"], []],
        "user": [None, "alice", "mallory"],
        "endpoint": [None, "chat"],
        "model": [None, "m1"],
        "status": [None, 200],
        "request_id": [None, "shared", "globex-only"],
        "window": [None, (BASE + timedelta(hours=1), BASE + timedelta(hours=4))],
    }
    checked = 0
    for values in itertools.product(*choices.values()):
        options = dict(zip(choices, values, strict=True))
        window = options.pop("window") or (None, None)
        flt = EventFilter(**options, since=window[0], until=window[1])
        events, _ = await list_events(store.engine, flt, limit=1000)
        assert positions(events) == expected(rows, flt), flt
        if flt.tenants is not None:
            assert {e["tenant"] for e in events} <= set(flt.tenants), flt
            assert all(e["record"]["tenant"] in flt.tenants for e in events), flt
        checked += 1
    assert checked == 6 * 3 * 2 * 2 * 2 * 3 * 2


async def test_an_acme_auditor_never_sees_globex_even_when_paging_one_by_one(store):
    rows = await seed(store)
    for options in ({}, {"user": "mallory"}, {"request_id": "globex-only"}, {"request_id": "shared"},
                    {"status": 429}, {"since": BASE + timedelta(hours=3)}):
        events = await every_page(store.engine, EventFilter(tenants=["acme"], **options), limit=1)
        assert all(e["tenant"] == "acme" for e in events), options
        assert positions(events) == expected(rows, EventFilter(tenants=["acme"], **options))
    # A cursor pointing into globex (hand-made, or from another caller) still yields only acme rows.
    for cursor in (encode_cursor("globex", 0), encode_cursor("acme", 0), encode_cursor("", 0), encode_cursor("a", 0)):
        events = await every_page_from(store.engine, EventFilter(tenants=["acme"]), cursor)
        assert all(e["tenant"] == "acme" for e in events), cursor


async def every_page_from(engine, flt: EventFilter, cursor: str) -> list[dict]:
    events: list[dict] = []
    while cursor:
        page, cursor = await list_events(engine, flt, cursor, 2)
        events += page
    return events


async def test_events_for_request_stay_within_the_given_tenants(store):
    await seed(store)
    engine = store.engine
    assert positions(await events_for_request(engine, "shared", None)) == [("acme", 4), ("globex", 1)]
    assert positions(await events_for_request(engine, "shared", ["acme"])) == [("acme", 4)]
    assert positions(await events_for_request(engine, "shared", ["globex"])) == [("globex", 1)]
    assert await events_for_request(engine, "globex-only", ["acme"]) == []
    assert await events_for_request(engine, "shared", []) == []
    assert await events_for_request(engine, "no-such-request", None) == []
    # Repeated request ids (client-supplied) come back as a list, in chain order.
    await store.append([record("acme", 99, request_id="shared")])
    assert positions(await events_for_request(engine, "shared", ["acme"])) == [("acme", 4), ("acme", 7)]


async def test_no_tenants_means_nothing(store):
    await seed(store)
    assert await list_events(store.engine, EventFilter(tenants=[])) == ([], None)


# ---- paging ----

async def test_paging_returns_every_row_once_in_order_while_rows_are_appended(store):
    await store.append([record("acme", n) for n in range(1, 26)] + [record("globex", n) for n in range(1, 6)])
    for tenants in (["acme"], None):
        flt = EventFilter(tenants=tenants)
        before = positions((await list_events(store.engine, flt, limit=1000))[0])
        seen: list[tuple[str, int]] = []
        page, cursor = await list_events(store.engine, flt, limit=10)
        seen += positions(page)
        while cursor:
            await store.append([record("acme", 100), record("globex", 100)])  # the log grows under the reader
            page, cursor = await list_events(store.engine, flt, cursor, 10)
            assert len(page) <= 10
            seen += positions(page)
        after = positions((await list_events(store.engine, flt, limit=1000))[0])
        assert seen == sorted(set(seen)), "in order, no row twice"
        assert set(before) <= set(seen) and set(seen) <= set(after), "no row skipped"
        acme_seen = [seq for t, seq in seen if t == "acme"]
        assert acme_seen == list(range(1, len(acme_seen) + 1)), "acme's rows without a gap"
        if tenants == ["acme"]:
            assert seen == after, "rows appended ahead of the cursor appear on later pages"


async def test_the_last_page_has_no_cursor(store):
    await store.append([record("acme", n) for n in range(1, 21)])
    events, cursor = await list_events(store.engine, EventFilter(), limit=10)
    events2, cursor2 = await list_events(store.engine, EventFilter(), cursor, 10)
    assert len(events) == len(events2) == 10 and cursor2 is None


MALFORMED_CURSORS = [
    "", "not a cursor!", "%%%", "é",
    base64.urlsafe_b64encode(b"[1, 2]").decode(),
    base64.urlsafe_b64encode(b'["acme", -1]').decode(),
    base64.urlsafe_b64encode(b'["acme", true]').decode(),
    base64.urlsafe_b64encode(b'["acme", 1.5]').decode(),
    base64.urlsafe_b64encode(b'{"tenant": "acme", "seq": 1}').decode(),
    base64.urlsafe_b64encode(b'["acme", 1, 2]').decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
]


async def test_a_malformed_cursor_or_a_limit_outside_1_to_1000_is_a_value_error(store):
    for cursor in MALFORMED_CURSORS:
        with pytest.raises(ValueError, match="malformed cursor"):
            await list_events(store.engine, EventFilter(tenants=["acme"]), cursor)
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError, match="limit must be between 1 and 1000"):
            await list_events(store.engine, EventFilter(), limit=limit)
    assert await list_events(store.engine, EventFilter(), limit=1000) == ([], None)


async def test_times_without_a_zone_are_refused(store):
    with pytest.raises(ValueError, match="time zone"):
        await list_events(store.engine, EventFilter(since=datetime(2025, 1, 1)))


# ---- export ----

def signer() -> Signer:
    return Signer.from_seed(base64.b64encode(b"k" * 32).decode())


async def export(store, tenant="acme", since=None, until=None, key=None) -> list[bytes]:
    return [line async for line in export_lines(store.engine, tenant, since, until, key or signer())]


async def fill_with_checkpoints(store) -> None:
    """acme seq 1..12 an hour apart (seq 7 arrived late: its time is before seq 2's), signed at 4, 8 and 12."""
    hours = [0, 1, 2, 3, 4, 5, 0.5, 7, 8, 9, 10, 11]
    for start, stop in ((0, 4), (4, 8), (8, 12)):
        await store.append([record("acme", n + 1, occurred_at=BASE + timedelta(hours=hours[n]))
                            for n in range(start, stop)] + [record("globex", start)])
        await store.checkpoint("acme", signer())
        await store.checkpoint("globex", signer())


def parsed(lines: list[bytes]) -> list[dict]:
    return [json.loads(line) for line in lines]


async def test_an_export_of_a_range_is_contiguous_and_verifies(store):
    await fill_with_checkpoints(store)
    lines = await export(store, since=BASE + timedelta(hours=1), until=BASE + timedelta(hours=9))
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    items = parsed(lines)
    rows = [i for i in items if "record" in i]
    assert [r["seq"] for r in rows] == list(range(2, 10)), "seq 7 is inside the run though it arrived earlier"
    assert all(r["tenant"] == "acme" and json.loads(r["record"])["tenant"] == "acme" for r in rows)
    assert [i["checkpoint"]["seq"] for i in items if "checkpoint" in i] == [4, 8]
    manifest = items[-1]["manifest"]
    assert (manifest["first_seq"], manifest["last_seq"], manifest["count"]) == (2, 9, 8)
    assert manifest["first_prev_hash"] == rows[0]["prev_hash"] and manifest["last_row_hash"] == rows[-1]["row_hash"]
    assert manifest["since"] == (BASE + timedelta(hours=1)).isoformat()
    assert manifest["key_id"] == signer().key_id
    ok, reason = verify_export(lines, signer().public_key)
    assert ok, reason
    assert "8 records" in reason and "2 checkpoints" in reason


async def test_an_export_without_bounds_is_the_whole_chain_from_genesis(store):
    await fill_with_checkpoints(store)
    lines = await export(store)
    manifest = parsed(lines)[-1]["manifest"]
    assert (manifest["first_seq"], manifest["last_seq"], manifest["count"]) == (1, 12, 12)
    assert manifest["first_prev_hash"] == GENESIS and manifest["since"] is None and manifest["until"] is None
    assert verify_export(lines, signer().public_key)[0]
    assert verify_export([line.rstrip(b"\n") for line in lines], signer().public_key)[0], "splitlines() works too"
    assert outsider_verifies(b"".join(lines), signer().public_key.public_bytes_raw())


async def test_an_empty_export_still_has_a_signed_manifest(store):
    await fill_with_checkpoints(store)
    for tenant, since in (("initech", None), ("acme", BASE + timedelta(days=1))):
        lines = await export(store, tenant, since=since)
        assert len(lines) == 1
        manifest = parsed(lines)[0]["manifest"]
        assert manifest["count"] == 0 and manifest["first_seq"] is None
        assert verify_export(lines, signer().public_key) == (True, f"intact: 0 records of {tenant} (no records), 0 checkpoints")


async def test_rows_appended_during_an_export_are_not_in_it(pg_url):
    from wrapper.audit.migrate import upgrade_database

    await upgrade_database(pg_url)
    store = AuditStore(make_engine(pg_url))
    try:
        await store.append([record("acme", n) for n in range(1, 6)])
        lines, stream = [], export_lines(store.engine, "acme", None, None, signer())
        lines.append(await anext(stream))
        await store.append([record("acme", n) for n in range(6, 9)])
        lines += [line async for line in stream]
        assert parsed(lines)[-1]["manifest"]["last_seq"] == 5
        assert verify_export(lines, signer().public_key)[0]
    finally:
        await store.close()


async def test_export_refuses_a_window_the_wrong_way_round_or_without_a_zone(store):
    with pytest.raises(ValueError, match="since"):
        await export(store, since=BASE, until=BASE - timedelta(hours=1))
    with pytest.raises(ValueError, match="time zone"):
        await export(store, until=datetime(2025, 1, 1))


def outsider_verifies(export: bytes, public_key: bytes) -> bool:
    """Verify an export with hashlib, cryptography and json only: no gateway code."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(public_key)
    *lines, last = export.splitlines(keepends=True)
    manifest = json.loads(last)["manifest"]
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    key.verify(base64.b64decode(manifest["signature"]),  # raises InvalidSignature
               json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    assert hashlib.sha256(b"".join(lines)).hexdigest() == manifest["lines_sha256"]
    prev, heads = manifest["first_prev_hash"], {}
    for item in map(json.loads, lines):
        if c := item.get("checkpoint"):
            key.verify(base64.b64decode(c["signature"]),
                       f"gateway-audit-checkpoint\n{c['tenant']}\n{c['seq']}\n{c['head_hash']}\n{c['created_at']}".encode())
            assert heads[c["seq"]] == c["head_hash"]
            continue
        assert item["prev_hash"] == prev and item["tenant"] == manifest["tenant"]
        prev = hashlib.sha256(f"{item['tenant']}\n{item['seq']}\n{prev}\n{item['record']}".encode()).hexdigest()
        assert prev == item["row_hash"]
        heads[item["seq"]] = prev
    assert list(heads) == list(range(manifest["first_seq"], manifest["last_seq"] + 1)) and prev == manifest["last_row_hash"]
    return True


def edit(lines: list[bytes], index: int, change) -> list[bytes]:
    item = json.loads(lines[index])
    change(item)
    return lines[:index] + [(json.dumps(item, sort_keys=True, separators=(",", ":")) + "\n").encode()] + lines[index + 1:]


def rewrite_from(lines: list[bytes], index: int) -> list[bytes]:
    """A careful forger: change a record and recompute every hash after it (the checkpoints cannot be re-signed)."""
    lines = edit(lines, index, lambda r: r.update(record=r["record"].replace('"status":200', '"status":201')))
    prev = json.loads(lines[index])["prev_hash"]
    for i in range(index, len(lines)):
        item = json.loads(lines[i])
        if "record" not in item:
            break
        item["prev_hash"], item["row_hash"] = prev, row_hash(item["tenant"], item["seq"], prev, item["record"])
        prev = item["row_hash"]
        lines = edit(lines, i, lambda r, new=item: r.update(new))
    return lines


def manifest_change(change):
    def apply(lines):
        return edit(lines, len(lines) - 1, lambda m: change(m["manifest"]))
    return apply


def resigned(lines: list[bytes], key: Signer) -> list[bytes]:
    """Recompute lines_sha256 and sign the manifest with another key."""
    import hashlib

    def change(m):
        m["lines_sha256"] = hashlib.sha256(b"".join(lines[:-1])).hexdigest()
        m["key_id"], m["public_key"] = key.key_id, base64.b64encode(key.public_key.public_bytes_raw()).decode()
        m["signature"] = key.sign(manifest_message(m))
    return manifest_change(change)(lines)


OTHER_KEY = Signer.from_seed(base64.b64encode(b"x" * 32).decode())


# An export of acme seq 1..12 (lines 0-11), checkpoints 4, 8, 12 (lines 12-14), the manifest (line 15).
TAMPERINGS = [
    ("changed record", lambda ls: edit(ls, 2, lambda r: r.update(record=r["record"].replace('"status":200', '"status":500'))),
     "seq 3: the record does not match its hash"),
    ("dropped record", lambda ls: ls[:3] + ls[4:], "record 4 is missing"),
    ("dropped second record", lambda ls: ls[:1] + ls[2:], "record 2 is missing"),
    ("dropped first record", lambda ls: ls[1:], "lines_sha256 does not match"),  # the rest still link
    ("dropped last record", lambda ls: ls[:11] + ls[12:], "checkpoint 12 is outside the exported records"),
    ("swapped records", lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "record 2 is missing"),
    ("dropped checkpoint", lambda ls: ls[:12] + ls[13:], "lines_sha256 does not match"),
    ("line after the manifest", lambda ls: ls + [b'{"checkpoint": {}}\n'], "line 17 follows the manifest"),
    ("dropped manifest", lambda ls: ls[:-1], "no manifest"),
    ("inserted garbage", lambda ls: ls[:5] + [b"not json\n"] + ls[5:], "line 6 is malformed"),
    ("consistent rewrite", lambda ls: rewrite_from(ls, 5),
     "seq 8: the record's hash differs from the head signed by checkpoint 8"),
    ("changed checkpoint", lambda ls: edit(ls, 12, lambda c: c["checkpoint"].update(created_at="2020-01-01T00:00:00+00:00")),
     "checkpoint 4 has an invalid signature"),
    ("changed manifest count", manifest_change(lambda m: m.update(count=11)), "the manifest's signature is invalid"),
    ("changed manifest range", manifest_change(lambda m: m.update(first_seq=2)), "the manifest's signature is invalid"),
    ("swapped manifest key", manifest_change(lambda m: m.update(public_key=base64.b64encode(b"y" * 32).decode())),
     "the manifest's public_key is not the trusted key"),
    ("re-signed by another key", lambda ls: resigned(ls, OTHER_KEY), "the manifest is signed by unknown key"),
]


async def test_a_tampered_export_fails_naming_what_is_wrong(store):
    await fill_with_checkpoints(store)
    lines = await export(store)
    assert verify_export(lines, signer().public_key)[0]
    for name, tamper, reason in TAMPERINGS:
        ok, why = verify_export(tamper(lines), signer().public_key)
        assert not ok and reason in why, f"{name}: {why}"


async def test_an_export_verified_with_the_wrong_key_fails(store):
    await fill_with_checkpoints(store)
    ok, why = verify_export(await export(store), OTHER_KEY.public_key)
    assert not ok and "checkpoint 4 is signed by unknown key" in why
    ok, why = verify_export(await export(store, key=OTHER_KEY), {OTHER_KEY.key_id: OTHER_KEY.public_key,
                                                               signer().key_id: signer().public_key})
    assert ok, why


# ---- the CLI ----

def test_cli_exports_ndjson_that_verifies(pg_url, tmp_path):
    env = {**os.environ, "GATEWAY_DATABASE_URL": pg_url, "GATEWAY_VAR_DIR": str(tmp_path)}
    env.pop("GATEWAY_AUDIT_SIGNING_KEY", None)

    def gateway(*args):
        return subprocess.run([str(BIN / "gateway"), *args], capture_output=True, env=env, cwd=ROOT)

    assert gateway("db", "upgrade").returncode == 0
    key = Signer.load_or_create(None, tmp_path / "audit-signing.key")

    async def fill_and_sign():
        engine = make_engine(pg_url)
        store = AuditStore(engine)
        await store.append([record("acme", n, occurred_at=BASE + timedelta(hours=n)) for n in range(1, 6)]
                           + [record("globex", 1, occurred_at=BASE)])
        await store.checkpoint("acme", key)
        await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fill_and_sign()).result()

    whole = gateway("audit", "export", "--tenant", "acme")
    assert whole.returncode == 0, whole.stderr
    lines = whole.stdout.splitlines(keepends=True)
    assert verify_export(lines, key.public_key) == (True, "intact: 5 records of acme (seq 1..5), 1 checkpoints")
    assert outsider_verifies(whole.stdout, key.public_key.public_bytes_raw())

    # Bounds: an offset, or none (UTC); a date alone is midnight UTC.
    part = gateway("audit", "export", "--tenant", "acme", "--since", "2025-03-01T12:00:00+02:00",
                   "--until", "2025-03-01T13:00:00")
    assert part.returncode == 0, part.stderr
    manifest = json.loads(part.stdout.splitlines()[-1])["manifest"]
    assert (manifest["first_seq"], manifest["last_seq"]) == (1, 3)
    assert verify_export(part.stdout.splitlines(), key.public_key)[0]

    for args, says in ((["--since", "yesterday"], "--since is not an ISO 8601 time"),
                       (["--until", "2025-13-01"], "--until is not an ISO 8601 time"),
                       (["--since", "2025-03-02", "--until", "2025-03-01"], "since must not be later than until")):
        bad = gateway("audit", "export", "--tenant", "acme", *args)
        assert bad.returncode == 2 and says in bad.stderr.decode() and not bad.stdout, bad.stderr
