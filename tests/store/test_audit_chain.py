"""The audit chain on real PostgreSQL and on SQLite: append-only, tamper-evident, gap-free under concurrency."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.support.audit_db import as_superuser, record, tamper
from tests.support.processes import BIN, ROOT
from wrapper.audit.migrate import upgrade_database
from wrapper.audit.store import AuditStore, make_engine


async def test_records_chain_per_tenant_without_gaps_and_verify(store):
    placed = await store.append([record("acme", 1), record("globex", 1), record("acme", 2)])
    assert placed == [("acme", 1), ("globex", 1), ("acme", 2)]
    await store.append([record("acme", 3)])
    assert await store.tenants() == ["acme", "globex"]
    acme, globex = await store.verify("acme"), await store.verify("globex")
    assert acme.ok and acme.checked == 3
    assert globex.ok and globex.checked == 1


async def test_the_database_refuses_update_and_delete(store):
    await store.append([record("acme", 1)])
    for statement in ("UPDATE audit_events SET record = '{}'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(text(statement))
    assert (await store.verify("acme")).ok


async def test_postgres_refuses_truncate(pg_url):
    await upgrade_database(pg_url)
    engine = make_engine(pg_url)
    store = AuditStore(engine)
    try:
        await store.append([record("acme", 1)])
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("TRUNCATE audit_events"))
    finally:
        await store.close()


@pytest.mark.parametrize(
    "statements, bad_seq, reason",
    [
        (["UPDATE audit_events SET record = replace(record, '\"status\"\\:200', '\"status\"\\:500') WHERE seq = 3"],
         3, "does not match its hash"),
        (["DELETE FROM audit_events WHERE seq = 2"], 2, "missing"),
        (["DELETE FROM audit_events WHERE seq = 5"], 5, "head says 5"),  # the newest record, cut off
        # Swap the content of records 2 and 4 (their hashes and links travel with them).
        (["UPDATE audit_events SET seq = -2 WHERE seq = 2", "UPDATE audit_events SET seq = 2 WHERE seq = 4",
          "UPDATE audit_events SET seq = 4 WHERE seq = -2"], 2, "prev_hash"),
        (["UPDATE audit_events SET request_id = 'other' WHERE seq = 4"], 4, "request_id"),
        (["UPDATE audit_events SET cost = 0 WHERE seq = 3"], 3, "cost"),  # the cost ledger is checked too
    ],
    ids=["changed-field", "deleted-row", "deleted-tail", "swapped-rows", "changed-column", "changed-cost"],
)
async def test_tampering_is_detected_at_the_first_bad_seq(store, statements, bad_seq, reason):
    await store.append([record("acme", n) for n in range(1, 6)])
    await tamper(store, *[s + (" AND tenant = 'acme'" if "WHERE" in s else "") for s in statements])
    verdict = await store.verify("acme")
    assert not verdict.ok
    assert verdict.first_bad_seq == bad_seq and reason in verdict.reason, verdict


async def test_recomputed_hashes_do_not_hide_a_change_from_the_next_link(store):
    # A careful forger rewrites record 2 and its row_hash; record 3 still points at the old hash.
    await store.append([record("acme", n, note="original") for n in range(1, 4)])
    from wrapper.audit.chain import row_hash

    async with store.engine.connect() as conn:
        row = (await conn.execute(text("SELECT prev_hash, record FROM audit_events WHERE tenant='acme' AND seq=2"))).one()
    forged = row.record.replace('"note":"original"', '"note":"forged"')  # a field with no query column
    assert forged != row.record
    digest = row_hash("acme", 2, row.prev_hash, forged)
    await tamper(store, "UPDATE audit_events SET record = :forged, row_hash = :digest WHERE tenant='acme' AND seq = 2",
                 forged=forged, digest=digest)
    verdict = await store.verify("acme")
    assert not verdict.ok and verdict.first_bad_seq == 3 and "prev_hash" in verdict.reason


async def test_concurrent_writers_in_two_processes_leave_a_gap_free_chain(pg_url):
    await upgrade_database(pg_url)
    tasks, each = 8, 500
    command = [str(BIN / "python"), "-m", "tests.support.audit_writer", pg_url, "acme", str(tasks), str(each)]
    writers = [subprocess.Popen([*command, label], cwd=ROOT) for label in ("p1", "p2")]
    codes = await asyncio.gather(*(asyncio.to_thread(w.wait, 300) for w in writers))
    assert codes == [0, 0]
    engine = make_engine(pg_url)
    try:
        verdict = await AuditStore(engine).verify("acme")
        assert verdict.ok and verdict.checked == 2 * tasks * each, verdict
        async with engine.connect() as conn:
            distinct = (await conn.execute(text("SELECT count(DISTINCT request_id) FROM audit_events"))).scalar()
        assert distinct == 2 * tasks * each  # nothing lost, nothing written twice
    finally:
        await engine.dispose()


# --- Signed checkpoints ------------------------------------------------------------------------

from wrapper.audit.chain import GENESIS, row_hash  # noqa: E402
from wrapper.audit.signing import Signer  # noqa: E402


@pytest.fixture
def signer(tmp_path) -> Signer:
    return Signer.load_or_create(None, tmp_path / "audit-signing.key")


async def rewrite_consistently(store: AuditStore, tenant: str, from_seq: int) -> None:
    """What a superuser could do: change a record and recompute every hash after it, and the head."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT seq, prev_hash, record FROM audit_events WHERE tenant = :t ORDER BY seq"),
                                   {"t": tenant})).all()
    prev = GENESIS
    statements, params = [], {}
    for row in rows:
        record = row.record
        if row.seq == from_seq:
            record = record.replace('"latency_ms":14.2', '"latency_ms":1.0')  # a field with no query column
            assert record != row.record
        digest = row_hash(tenant, row.seq, prev, record)
        statements.append(f"UPDATE audit_events SET record = :r{row.seq}, prev_hash = :p{row.seq}, row_hash = :h{row.seq} "
                          f"WHERE tenant = '{tenant}' AND seq = {row.seq}")
        params.update({f"r{row.seq}": record, f"p{row.seq}": prev, f"h{row.seq}": digest})
        prev = digest
    statements.append(f"UPDATE audit_heads SET head_hash = '{prev}' WHERE tenant = '{tenant}'")
    await tamper(store, *statements, **params)


async def test_a_consistent_rewrite_passes_the_chain_alone_but_not_a_signed_checkpoint(store, signer):
    keys = {signer.key_id: signer.public_key}
    await store.append([record("acme", n) for n in range(1, 4)])
    await rewrite_consistently(store, "acme", from_seq=2)
    assert (await store.verify("acme", keys)).ok  # the control: without a checkpoint the rewrite is invisible

    await store.append([record("globex", n) for n in range(1, 6)])
    assert await store.checkpoint("globex", signer) == 5
    assert await store.checkpoint("globex", signer) is None  # nothing new to sign
    await rewrite_consistently(store, "globex", from_seq=2)
    verdict = await store.verify("globex", keys)
    assert not verdict.ok and verdict.first_bad_seq == 5 and "rewritten after a signed checkpoint" in verdict.reason


async def test_an_altered_checkpoint_is_detected(store, signer, tmp_path):
    keys = {signer.key_id: signer.public_key}
    await store.append([record("acme", n) for n in range(1, 4)])
    await store.checkpoint("acme", signer)
    assert (await store.verify("acme", keys)).ok
    # The superuser moves the signed head to match a rewritten chain: the signature no longer fits.
    await tamper(store, *(["DROP TRIGGER audit_checkpoints_no_update"] if store.engine.dialect.name == "sqlite" else []),
                 f"UPDATE audit_checkpoints SET head_hash = '{'f' * 64}' WHERE tenant = 'acme'")
    verdict = await store.verify("acme", keys)
    assert not verdict.ok and verdict.first_bad_seq == 3 and "invalid signature" in verdict.reason
    other = Signer.load_or_create(None, tmp_path / "another.key")
    assert "unknown key" in (await store.verify("acme", {other.key_id: other.public_key})).reason


async def test_records_cut_off_behind_a_checkpoint_are_detected(store, signer):
    keys = {signer.key_id: signer.public_key}
    await store.append([record("acme", n) for n in range(1, 5)])
    await store.checkpoint("acme", signer)
    async with store.engine.connect() as conn:
        head_at_2 = (await conn.execute(text("SELECT row_hash FROM audit_events WHERE tenant='acme' AND seq=2"))).scalar()
    await tamper(store, "DELETE FROM audit_events WHERE tenant = 'acme' AND seq > 2",
                 f"UPDATE audit_heads SET seq = 2, head_hash = '{head_at_2}' WHERE tenant = 'acme'")
    verdict = await store.verify("acme", keys)
    assert not verdict.ok and verdict.first_bad_seq == 3 and "checkpoint 4 signed it" in verdict.reason


async def test_checkpoints_are_append_only(store, signer):
    await store.append([record("acme", 1)])
    await store.checkpoint("acme", signer)
    for statement in ("UPDATE audit_checkpoints SET seq = 9", "DELETE FROM audit_checkpoints"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(text(statement))


def test_the_signing_key_is_made_once_and_kept_private(tmp_path):
    path = tmp_path / "var" / "audit-signing.key"
    first = Signer.load_or_create(None, path)
    assert Signer.load_or_create(None, path).key_id == first.key_id
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        Signer.from_seed("c2hvcnQ=")


# --- The CLI ----------------------------------------------------------------------------------

def test_cli_upgrades_the_database_and_verify_exits_by_verdict(pg_url, tmp_path):
    env = {**os.environ, "GATEWAY_DATABASE_URL": pg_url, "GATEWAY_VAR_DIR": str(tmp_path)}

    def gateway(*args):
        return subprocess.run([str(BIN / "gateway"), *args], capture_output=True, text=True, env=env, cwd=ROOT)

    assert gateway("db", "upgrade").returncode == 0
    assert gateway("db", "upgrade").returncode == 0  # idempotent

    async def fill_and_sign():
        engine = make_engine(pg_url)
        store = AuditStore(engine)
        await store.append([record("acme", n) for n in range(1, 4)] + [record("globex", 1)])
        await store.checkpoint("acme", Signer.load_or_create(None, tmp_path / "audit-signing.key"))
        await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fill_and_sign()).result()

    intact = gateway("audit", "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "acme: intact, 3 records" in intact.stdout and "globex: intact, 1 records" in intact.stdout

    as_superuser("SET session_replication_role = replica; UPDATE audit_events SET record = record || ' ' WHERE seq = 2 AND tenant = 'acme'",
           dsn=pg_url.replace("postgresql+asyncpg", "postgresql"))
    broken = gateway("audit", "verify", "--tenant", "acme")
    assert broken.returncode == 1
    assert "first bad record is seq 2" in broken.stdout



async def test_the_documented_wrapper_role_appends_and_reads_but_cannot_change_history(pg_url):
    await upgrade_database(pg_url)
    role = f"gw_wrapper_{uuid.uuid4().hex[:8]}"
    database = pg_url.rsplit("/", 1)[1]
    owner = pg_url.replace("postgresql+asyncpg", "postgresql")
    as_superuser(f"CREATE ROLE {role} LOGIN", dsn=owner)
    try:
        as_superuser(f"GRANT SELECT, INSERT ON audit_events, audit_checkpoints TO {role}; "
                     f"GRANT SELECT, INSERT, UPDATE ON audit_heads TO {role}", dsn=owner)
        store = AuditStore(make_engine(f"postgresql+asyncpg://{role}@127.0.0.1:5432/{database}"))
        try:
            await store.append([record("acme", 1)])
            await store.append([record("acme", 2), record("globex", 1)])  # both append paths
            assert (await store.verify("acme")).ok
            for statement in ("UPDATE audit_events SET record = '{}'", "DELETE FROM audit_events",
                              "TRUNCATE audit_events", "ALTER TABLE audit_events DISABLE TRIGGER ALL"):
                with pytest.raises(DBAPIError, match="permission denied|must be owner"):
                    async with store.engine.begin() as conn:
                        await conn.execute(text(statement))
        finally:
            await store.close()
    finally:
        as_superuser(f"DROP OWNED BY {role}; DROP ROLE {role}", dsn=owner)
