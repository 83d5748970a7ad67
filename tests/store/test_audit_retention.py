"""Retention cuts on real PostgreSQL and on SQLite: a prefix goes, a record says so, the rest stays tamper-evident."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.support.audit_db import as_superuser, record, tamper
from tests.support.processes import BIN, ROOT
from wrapper.audit.chain import row_hash
from wrapper.audit.retention import RetentionRefused, cut_expired
from wrapper.audit.signing import Signer
from wrapper.audit.store import AuditStore, make_engine
from wrapper.config import AuditPolicy

NOW = datetime.now(UTC)
KEEP_30_DAYS = AuditPolicy(retention_days=30)


def aged(tenant: str, n: int, days: float) -> dict:
    return record(tenant, n, occurred_at=NOW - timedelta(days=days))


@pytest.fixture
def signer(tmp_path) -> Signer:
    return Signer.load_or_create(None, tmp_path / "audit-signing.key")


async def rows(store: AuditStore, tenant: str = "acme") -> list:
    async with store.engine.connect() as conn:
        return (await conn.execute(text("SELECT seq, prev_hash, row_hash, record FROM audit_events "
                                        "WHERE tenant = :t ORDER BY seq"), {"t": tenant})).all()


async def old_then_young(store: AuditStore) -> None:
    """Records 1..3 are 40 days old, 4 is 5 days old, 5 is 50 days old (kept: after a young one), 6 is new."""
    await store.append([aged("acme", n, 40) for n in (1, 2, 3)])
    await store.append([aged("acme", 4, 5), aged("acme", 5, 50), aged("acme", 6, 0)])


async def test_expired_records_are_cut_as_a_prefix_and_a_cut_record_closes_the_gap(store, signer):
    keys = {signer.key_id: signer.public_key}
    await store.append([aged("acme", n, 40) for n in (1, 2)])
    assert await store.checkpoint("acme", signer) == 2  # inside the removed prefix: its signature still checks
    await store.append([aged("acme", 3, 40)])
    assert await store.checkpoint("acme", signer) == 3  # exactly the last removed record: links to record 4
    await store.append([aged("acme", 4, 5), aged("acme", 5, 50), aged("acme", 6, 0)])
    await store.append([aged("globex", 1, 40)])
    removed_hash = (await rows(store))[2].row_hash

    cut = await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    assert (cut.tenant, cut.removed, cut.through_seq, cut.dry_run) == ("acme", 3, 3, False)
    assert cut.cutoff == NOW - timedelta(days=30)
    left = await rows(store)
    assert [r.seq for r in left] == [4, 5, 6, 7]
    marker = json.loads(left[-1].record)
    assert marker["kind"] == "retention_cut" and marker["request_id"].startswith("retention-cut-")
    assert (marker["through_seq"], marker["last_removed_hash"], marker["removed"], marker["retention_days"]) == \
        (3, removed_hash, 3, 30)
    assert datetime.fromisoformat(marker["cutoff"]) == cut.cutoff
    verdict = await store.verify("acme", keys)
    assert verdict.ok and verdict.checked == 4, verdict
    assert len(await rows(store, "globex")) == 1  # other tenants are untouched

    # Later, everything is old, the first cut record too: the chain keeps only the newest cut.
    assert await store.checkpoint("acme", signer) == 7
    again = await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW + timedelta(days=60))
    assert (again.removed, again.through_seq) == (4, 7)
    left = await rows(store)
    assert [r.seq for r in left] == [8] and json.loads(left[0].record)["through_seq"] == 7
    verdict = await store.verify("acme", keys)
    assert verdict.ok and verdict.checked == 1, verdict
    await store.append([aged("acme", 9, 0)])
    assert (await store.verify("acme", keys)).ok


async def test_nothing_expired_writes_nothing(store):
    await store.append([aged("acme", n, 1) for n in (1, 2)])
    cut = await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    assert (cut.removed, cut.through_seq) == (0, None)
    assert [r.seq for r in await rows(store)] == [1, 2]
    empty = await cut_expired(store, "nobody", KEEP_30_DAYS, now=NOW)
    assert empty.removed == 0 and await rows(store, "nobody") == []


async def test_a_dry_run_changes_nothing(store):
    await old_then_young(store)
    before = await rows(store)
    cut = await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW, dry_run=True)
    assert (cut.removed, cut.through_seq, cut.dry_run) == (3, 3, True)
    assert await rows(store) == before


@pytest.mark.parametrize("policy, words", [
    (AuditPolicy(retention_days=30, legal_hold=True), "acme is under legal hold"),
    (AuditPolicy(retention_days=None), "kept forever"),
], ids=["legal-hold", "no-retention"])
async def test_a_legal_hold_or_no_retention_refuses_and_changes_nothing(store, policy, words):
    await old_then_young(store)
    before = await rows(store)
    for dry_run in (False, True):
        with pytest.raises(RetentionRefused, match=words):
            await cut_expired(store, "acme", policy, now=NOW, dry_run=dry_run)
    assert await rows(store) == before
    assert (await store.verify("acme")).ok


async def test_the_delete_protection_is_back_after_a_cut(store):
    await old_then_young(store)
    protection_before = await _delete_protection(store)
    await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    assert await _delete_protection(store) == protection_before
    for statement in ("DELETE FROM audit_events", "UPDATE audit_events SET record = '{}'"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(text(statement))
    assert (await store.verify("acme")).ok


async def test_a_cut_that_fails_midway_leaves_rows_and_protection_as_they_were(store, monkeypatch):
    await old_then_young(store)
    before, protection_before = await rows(store), await _delete_protection(store)

    async def broken_append(conn, records):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(store, "append_in", broken_append)
    with pytest.raises(RuntimeError):
        await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    assert await rows(store) == before
    assert await _delete_protection(store) == protection_before
    with pytest.raises(DBAPIError, match="append-only"):
        async with store.engine.begin() as conn:
            await conn.execute(text("DELETE FROM audit_events"))


async def _delete_protection(store: AuditStore) -> list:
    """The delete trigger as the database has it: SQLite's SQL, or PostgreSQL's enabled state."""
    sql = ("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events' ORDER BY name"
           if store.engine.dialect.name == "sqlite" else
           "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal ORDER BY tgname")
    async with store.engine.connect() as conn:
        found = [tuple(r) for r in (await conn.execute(text(sql))).all()]
    assert len(found) == 2, found
    return found


# --- A cut stays tamper-evident ---------------------------------------------------------------

async def test_records_missing_without_a_cut_are_named(store):
    await store.append([record("acme", n) for n in range(1, 5)])
    await tamper(store, "DELETE FROM audit_events WHERE tenant = 'acme' AND seq <= 2")
    verdict = await store.verify("acme")
    assert not verdict.ok and verdict.first_bad_seq == 1 and "records 1..2 are missing" in verdict.reason, verdict


@pytest.mark.parametrize("deleted, bad_seq, reason", [
    ("seq = 4", 1, "records 1..4 are missing"),  # the first record kept: the cut no longer links to it
    ("seq <= 5", 1, "records 1..5 are missing"),
    ("seq = 5", 5, "record 5 is missing"),
    ("seq = 7", 1, "records 1..3 are missing"),  # the cut record itself: nothing accounts for the gap
])
async def test_rows_deleted_after_a_cut_are_detected(store, deleted, bad_seq, reason):
    await old_then_young(store)
    await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    assert (await store.verify("acme")).ok
    await tamper(store, f"DELETE FROM audit_events WHERE tenant = 'acme' AND {deleted}")
    verdict = await store.verify("acme")
    assert not verdict.ok and verdict.first_bad_seq == bad_seq and reason in verdict.reason, verdict


async def test_a_changed_cut_record_is_detected(store):
    await old_then_young(store)
    await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    await tamper(store, "UPDATE audit_events SET record = replace(record, '\"removed\"\\:3', '\"removed\"\\:2') "
                        "WHERE tenant = 'acme' AND seq = 7")
    verdict = await store.verify("acme")
    assert not verdict.ok and verdict.first_bad_seq == 7 and "does not match its hash" in verdict.reason, verdict


async def test_a_cut_record_rehashed_to_claim_less_no_longer_accounts_for_the_gap(store):
    await old_then_young(store)
    await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    marker = (await rows(store))[-1]
    forged = marker.record.replace('"through_seq":3', '"through_seq":2')
    digest = row_hash("acme", 7, marker.prev_hash, forged)
    await tamper(store, "UPDATE audit_events SET record = :forged, row_hash = :digest WHERE tenant = 'acme' AND seq = 7",
                 f"UPDATE audit_heads SET head_hash = '{digest}' WHERE tenant = 'acme'", forged=forged, digest=digest)
    verdict = await store.verify("acme")
    assert not verdict.ok and verdict.first_bad_seq == 1 and "records 1..3 are missing" in verdict.reason, verdict


async def test_a_checkpoint_at_the_cut_catches_a_chain_rebuilt_after_it(store, signer):
    keys = {signer.key_id: signer.public_key}
    await store.append([aged("acme", n, 40) for n in (1, 2, 3)])
    await store.checkpoint("acme", signer)  # signs record 3, the last one the cut removes
    await store.append([aged("acme", 4, 0), aged("acme", 5, 0)])
    await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
    # A superuser rebuilds the chain from record 4 on another base, the cut record agreeing with it.
    fake_base = "e" * 64
    prev, statements, params = fake_base, [], {}
    for row in await rows(store):
        body = row.record.replace(f'"last_removed_hash":"{json.loads(row.record).get("last_removed_hash")}"',
                                  f'"last_removed_hash":"{fake_base}"')
        digest = row_hash("acme", row.seq, prev, body)
        statements.append(f"UPDATE audit_events SET record = :r{row.seq}, prev_hash = :p{row.seq}, row_hash = :h{row.seq} "
                          f"WHERE tenant = 'acme' AND seq = {row.seq}")
        params.update({f"r{row.seq}": body, f"p{row.seq}": prev, f"h{row.seq}": digest})
        prev = digest
    await tamper(store, *statements, f"UPDATE audit_heads SET head_hash = '{prev}' WHERE tenant = 'acme'", **params)
    verdict = await store.verify("acme", keys)
    assert not verdict.ok and verdict.first_bad_seq == 4 and "signed checkpoint at 3" in verdict.reason, verdict


# --- The CLI ----------------------------------------------------------------------------------

def test_cli_prune_cuts_by_the_tenant_policy_and_refuses_with_exit_1(pg_url, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "tenants:\n"
        "  acme: {models: ['*'], audit: {retention_days: 30}}\n"
        "  held: {models: ['*'], audit: {retention_days: 30, legal_hold: true}}\n"
        "  forever: {models: ['*']}\n"
    )
    env = {**os.environ, "GATEWAY_DATABASE_URL": pg_url, "GATEWAY_VAR_DIR": str(tmp_path), "GATEWAY_CONFIG": str(config)}

    def gateway(*args):
        return subprocess.run([str(BIN / "gateway"), *args], capture_output=True, text=True, env=env, cwd=ROOT)

    assert gateway("db", "upgrade").returncode == 0

    async def fill():
        engine = make_engine(pg_url)
        store = AuditStore(engine)
        for tenant in ("acme", "held", "forever"):
            await store.append([aged(tenant, n, 40) for n in (1, 2, 3)] + [aged(tenant, 4, 0)])
        await store.checkpoint("acme", Signer.load_or_create(None, tmp_path / "audit-signing.key"))
        await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fill()).result()

    dry = gateway("audit", "prune", "--tenant", "acme", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "acme: would remove 3 records through seq 3" in dry.stdout
    cut = gateway("audit", "prune", "--tenant", "acme")
    assert cut.returncode == 0, cut.stdout + cut.stderr
    assert "acme: removed 3 records through seq 3" in cut.stdout
    verify = gateway("audit", "verify")
    assert verify.returncode == 0, verify.stdout
    assert "acme: intact, 2 records" in verify.stdout and "held: intact, 4 records" in verify.stdout
    again = gateway("audit", "prune", "--tenant", "acme")
    assert again.returncode == 0 and "acme: nothing to remove" in again.stdout

    for tenant, words in (("held", "held is under legal hold"), ("forever", "kept forever"), ("nobody", "unknown tenant nobody")):
        refused = gateway("audit", "prune", "--tenant", tenant)
        assert refused.returncode == 1 and words in refused.stderr, (tenant, refused.stdout, refused.stderr)
    verify = gateway("audit", "verify")
    assert "held: intact, 4 records" in verify.stdout and "forever: intact, 4 records" in verify.stdout

    # A damaged chain is not cut: the cut would remove the evidence.
    as_superuser("SET session_replication_role = replica; "
                 "UPDATE audit_events SET record = record || ' ' WHERE seq = 2 AND tenant = 'forever'",
                 dsn=pg_url.replace("postgresql+asyncpg", "postgresql"))
    config.write_text(config.read_text().replace("forever: {models: ['*']}",
                                                 "forever: {models: ['*'], audit: {retention_days: 30}}"))
    damaged = gateway("audit", "prune", "--tenant", "forever")
    assert damaged.returncode == 1 and "NOT intact: first bad record is seq 2" in damaged.stderr, damaged.stderr


async def test_a_cut_while_writers_append_to_several_tenants_neither_deadlocks_nor_breaks_a_chain(pg_url):
    from wrapper.audit.migrate import upgrade_database

    await upgrade_database(pg_url)
    store = AuditStore(make_engine(pg_url))
    try:
        await store.append([aged("acme", n, 40) for n in range(1, 201)])

        async def writer(label: str) -> None:
            for n in range(40):  # one transaction holds the heads of both tenants, like the group-commit writer
                await store.append([aged("acme", f"{label}-{n}", 0), aged("globex", f"{label}-{n}", 0)])

        async def cutter() -> None:
            for _ in range(5):
                await cut_expired(store, "acme", KEEP_30_DAYS, now=NOW)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(writer(f"w{i}") for i in range(6)), cutter())
        for tenant, count in (("acme", 6 * 40 + 1), ("globex", 6 * 40)):
            verdict = await store.verify(tenant)
            assert verdict.ok and verdict.checked == count, verdict
    finally:
        await store.close()
