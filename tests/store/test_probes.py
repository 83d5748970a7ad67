"""The probes mean something: /readyz says whether this replica can answer anyone while the audit store is away, and
a stuck audit writer fails /healthz too, so the orchestrator restarts the process (on real PostgreSQL, in process)."""

from __future__ import annotations

import asyncio

import yaml

from tests.support.audit_db import as_superuser
from tests.support.inprocess import TENANT, in_process_gateway


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _set_store_failure(config, mode: str) -> None:
    data = yaml.safe_load(config.read_text())
    data["tenants"]["acme"].setdefault("audit", {})["on_store_failure"] = mode
    config.write_text(yaml.safe_dump(data))


async def test_readyz_tracks_the_audit_store_and_fails_only_when_no_tenant_could_be_answered(tmp_path, pg_url):
    async with in_process_gateway(tmp_path, database_url=pg_url, audit_commit_timeout_seconds=0.5) as gateway:
        ready = await gateway.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["audit_store"] == "ok"

        as_superuser(f'ALTER DATABASE "{_database(pg_url)}" ALLOW_CONNECTIONS false')
        as_superuser(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{_database(pg_url)}'")
        try:
            refused = await gateway.client.get("/readyz")  # acme fails closed: nobody can be answered here
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "audit_unavailable"
            assert (await gateway.client.get("/healthz")).status_code == 200  # alive: a restart would not help

            _set_store_failure(gateway.config, "open")
            await gateway.client.get("/v1/models", headers=gateway.auth("acme"))  # the config is read again
            spooling = await gateway.client.get("/readyz")
            assert spooling.status_code == 200 and spooling.json()["audit_store"] == "spooling"
        finally:
            as_superuser(f'ALTER DATABASE "{_database(pg_url)}" ALLOW_CONNECTIONS true')
        for _ in range(50):  # "ok" once the writer has replayed the spooled record (its retry comes within a second)
            back = await gateway.client.get("/readyz")
            if back.json()["audit_store"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert back.status_code == 200 and back.json()["audit_store"] == "ok"
        assert not gateway.app.api.state.audit_writer.spool.pending


async def test_a_stuck_audit_writer_fails_both_probes(tmp_path, pg_url, monkeypatch):
    monkeypatch.setattr("wrapper.audit.writer.WEDGED_AFTER_SECONDS", 1.0)
    async with in_process_gateway(tmp_path, TENANT, database_url=pg_url, audit_commit_timeout_seconds=0.3) as gateway:
        writer = gateway.app.api.state.audit_writer

        released = asyncio.Event()

        async def deaf_to_cancellation(records):  # a driver call that ignores the writer's deadline
            while not released.is_set():
                try:
                    await released.wait()
                except asyncio.CancelledError:
                    pass
            raise ConnectionError("released")  # then it fails: the records are spooled

        monkeypatch.setattr(writer.store, "append", deaf_to_cancellation)
        call = asyncio.create_task(gateway.client.post("/v1/chat/completions", headers=gateway.auth("acme"), json={
            "model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}))
        await asyncio.sleep(0.5)
        assert (await gateway.client.get("/healthz")).status_code == 200  # within the deadline + margin: not yet
        await asyncio.sleep(1.5)
        for probe in ("/healthz", "/readyz"):
            stuck = await gateway.client.get(probe)
            assert stuck.status_code == 503 and stuck.json()["error"]["code"] == "audit_writer_wedged", probe
        released.set()
        assert (await call).status_code == 503  # fail closed: its record could not be committed in time
        assert (await gateway.client.get("/healthz")).status_code == 200  # and the writer is back at work
