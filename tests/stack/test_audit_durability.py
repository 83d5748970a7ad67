"""Durability of the audit log: no answer without its record, even when the store goes away or the wrapper is killed.

Each test runs its own wrapper process (on its own PostgreSQL database) in
front of the session's LiteLLM, so it can take the store away or SIGKILL the
wrapper without disturbing the other tests.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from tests.support.audit_db import as_superuser, query
from tests.support.processes import BIN
from tests.support.stack import INTERNAL_SECRET, MASTER_KEY
from tests.support.wrapper import start_wrapper, write_tenants

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "durable?"}]}


@dataclass
class Wrapper:
    url: str
    process: object
    database: str  # database name
    database_url: str
    spool: Path
    keys: dict[str, str]
    env: dict[str, str]  # what it was started with (a test may start it again)

    def post(self, key: str, body: dict, request_id: str, timeout: float = 30) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=timeout,
                          headers={"authorization": f"Bearer {self.keys[key]}", "x-request-id": request_id})


@pytest.fixture
def wrapper(stack, tmp_path):
    """A wrapper with two tenants: `strict` (fail closed, the default) and `lenient` (fail open)."""
    database = f"gw_durable_{uuid.uuid4().hex[:12]}"
    as_superuser(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    config = tmp_path / "gateway.yaml"
    keys = write_tenants(config, {"strict": {"models": ["*"]},
                                  "lenient": {"models": ["*"], "audit": {"on_store_failure": "open"}}})
    env = {"GATEWAY_CONFIG": str(config), "GATEWAY_DATABASE_URL": database_url,
           "GATEWAY_LITELLM_PORT": stack.litellm_url.rsplit(":", 1)[1], "GATEWAY_LITELLM_CONFIG": str(stack.litellm_config),
           "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY, "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET}
    lone = start_wrapper(tmp_path, env, ready="/readyz")
    yield Wrapper(lone.url, lone.process, database, database_url, tmp_path / "var" / "audit-spool.ndjson", keys, env)
    lone.stop()
    as_superuser(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    as_superuser(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def take_store_away(database: str) -> None:
    as_superuser(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    as_superuser(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")


def bring_store_back(database: str) -> None:
    as_superuser(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def chain(wrapper: Wrapper, tenant: str) -> list[dict]:
    rows = query(wrapper.database_url, "SELECT record FROM audit_events WHERE tenant = $1 ORDER BY seq", tenant)
    return [orjson.loads(row["record"]) for row in rows]


def test_store_outage_fails_closed_or_spools_by_tenant_and_replays_in_order(wrapper):
    assert wrapper.post("strict", CHAT, "before-strict").status_code == 200
    assert wrapper.post("lenient", CHAT, "before-lenient").status_code == 200

    take_store_away(wrapper.database)
    refused = wrapper.post("strict", CHAT, "outage-strict")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "audit_unavailable"
    answered = [wrapper.post("lenient", CHAT, f"outage-lenient-{n}") for n in range(3)]
    assert [r.status_code for r in answered] == [200, 200, 200]
    spooled = [orjson.loads(line) for line in wrapper.spool.read_bytes().splitlines()]
    assert [r["request_id"] for r in spooled] == ["outage-strict", *(f"outage-lenient-{n}" for n in range(3))]
    assert spooled[0]["status"] == 503  # the strict request's record says what its client got

    bring_store_back(wrapper.database)
    deadline = time.monotonic() + 10
    while wrapper.spool.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.1)  # replayed by the writer's retry, with no new request needed
    assert wrapper.spool.stat().st_size == 0
    assert [r["request_id"] for r in chain(wrapper, "lenient")] == [
        "before-lenient", "outage-lenient-0", "outage-lenient-1", "outage-lenient-2"]
    assert [(r["request_id"], r["status"]) for r in chain(wrapper, "strict")] == [
        ("before-strict", 200), ("outage-strict", 503)]
    assert wrapper.post("strict", CHAT, "after-strict").status_code == 200
    verify = gateway_verify(wrapper)
    assert verify.returncode == 0, verify.stdout


class HeadLock:
    """Another session holding the chain heads' row locks (a long transaction, a stuck migration), on a thread."""

    def __init__(self, database_url: str) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.taken, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            async with connection.transaction():
                await connection.execute("SELECT * FROM audit_heads FOR UPDATE")
                self.taken.set()
                await asyncio.get_running_loop().run_in_executor(None, self.release.wait)
        finally:
            await connection.close()

    def __enter__(self) -> HeadLock:
        self.thread.start()
        assert self.taken.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(10)


def test_a_head_locked_for_40_s_costs_each_request_at_most_the_deadline_and_every_200_keeps_its_record(wrapper):
    """The audit commit deadline (GATEWAY_AUDIT_COMMIT_TIMEOUT_SECONDS, 2 s): fail-closed 503, fail-open 200."""
    assert wrapper.post("strict", CHAT, "before-strict").status_code == 200
    assert wrapper.post("lenient", CHAT, "before-lenient").status_code == 200
    outcomes: list[tuple[str, str, int, float]] = []

    def client(tenant: str, n: int, until: float) -> None:
        i = 0
        while time.monotonic() < until:
            rid, i = f"locked-{tenant}-{n}-{i}", i + 1
            started = time.monotonic()
            response = wrapper.post(tenant, CHAT, rid, timeout=30)
            outcomes.append((tenant, rid, response.status_code, time.monotonic() - started))

    with HeadLock(wrapper.database_url), concurrent.futures.ThreadPoolExecutor(4) as pool:
        until = time.monotonic() + 38
        for tenant in ("strict", "lenient"):
            for n in range(2):
                pool.submit(client, tenant, n, until)
    statuses = {(tenant, status) for tenant, _, status, _ in outcomes}
    assert statuses == {("strict", 503), ("lenient", 200)}, statuses
    slowest = max(took for *_, took in outcomes)
    print(f"{len(outcomes)} requests during the lock; slowest {slowest:.2f} s")
    assert slowest < 2 + 1, f"a request waited {slowest:.2f} s"

    deadline = time.monotonic() + 20
    while wrapper.spool.exists() and wrapper.spool.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.2)  # the spool is replayed once the lock is gone, with no request needed
    recorded = {row["request_id"]: row["status"] for row in query(
        wrapper.database_url, "SELECT request_id, status FROM audit_events")}
    assert {rid: status for _, rid, status, _ in outcomes} == {rid: recorded.get(rid) for _, rid, *_ in outcomes}
    assert wrapper.post("strict", CHAT, "after-strict").status_code == 200
    verify = gateway_verify(wrapper)
    assert verify.returncode == 0, verify.stdout


def gateway_verify(wrapper: Wrapper):
    import subprocess

    return subprocess.run([str(BIN / "gateway"), "audit", "verify"], capture_output=True, text=True,
                          env={**os.environ, "GATEWAY_DATABASE_URL": wrapper.database_url,
                               "GATEWAY_VAR_DIR": str(wrapper.spool.parent)})


def test_sigkill_under_load_loses_no_record_of_a_completed_answer(wrapper):
    completed: list[str] = []
    stop_sending = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = 0
            while not stop_sending.is_set():
                rid = f"load-{n}-{i}"
                i += 1
                body = {**CHAT, "stream": i % 2 == 0}
                headers = {"authorization": f"Bearer {wrapper.keys['strict']}", "x-request-id": rid}
                try:
                    with http.stream("POST", f"{wrapper.url}/v1/chat/completions", json=body, headers=headers) as r:
                        content = r.read()
                except httpx.HTTPError:
                    return  # the wrapper is gone
                complete = b"data: [DONE]" in content if body["stream"] else _complete_json(content)
                if r.status_code == 200 and complete:
                    completed.append(rid)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for n in range(16):
            pool.submit(client, n)
        # Kill once the load is real (a slow CI machine needs longer than a fast one), at most 30 s.
        deadline = time.monotonic() + 30
        while len(completed) <= 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(wrapper.process.pid, signal.SIGKILL)  # no shutdown, no flush: whatever is committed is all there is
        stop_sending.set()

    assert len(completed) > 50, "the load was too light to mean anything"
    recorded = {row["request_id"] for row in query(wrapper.database_url, "SELECT request_id FROM audit_events")}
    missing = [rid for rid in completed if rid not in recorded]
    assert missing == [], f"{len(missing)} of {len(completed)} answered requests have no record"
    assert gateway_verify(wrapper).returncode == 0  # and the chain is whole


def _complete_json(content: bytes) -> bool:
    try:
        return "choices" in orjson.loads(content)
    except orjson.JSONDecodeError:
        return False


def test_two_replicas_on_one_database_one_sigkilled_under_load_every_200_has_its_record_and_the_survivor_answers(
        stack, tmp_path):
    """As a deployment runs them: two wrappers (one signing key, one PostgreSQL), clients spread over both; one is
    killed with SIGKILL mid-load. Every answer either gave has its record, the chains verify, the other goes on."""
    database = f"gw_replicas_{uuid.uuid4().hex[:12]}"
    as_superuser(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    config = tmp_path / "gateway.yaml"
    keys = write_tenants(config, {"strict": {"models": ["*"]}, "lenient": {"models": ["*"], "audit": {"on_store_failure": "open"}}})
    env = {"GATEWAY_CONFIG": str(config), "GATEWAY_DATABASE_URL": database_url,
           "GATEWAY_LITELLM_PORT": stack.litellm_url.rsplit(":", 1)[1], "GATEWAY_LITELLM_CONFIG": str(stack.litellm_config),
           "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY, "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
           "GATEWAY_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode()}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replicas = [start_wrapper(tmp_path / name, env, ready="/readyz") for name in ("a", "b")]
    answered: dict[str, str] = {}  # request id -> the replica that answered it 200
    survivor_after_kill: list[int] = []
    killed = threading.Event()

    def client(n: int) -> None:
        replica = replicas[n % 2]
        tenant = ("strict", "lenient")[n // 2 % 2]
        with httpx.Client(timeout=30) as http:
            for i in range(10_000):
                if replica is replicas[0] and killed.is_set():
                    return
                if replica is replicas[1] and len(survivor_after_kill) >= 100:
                    return
                rid = f"replica-{n}-{i}"
                body = {**CHAT, "stream": i % 2 == 0}
                try:
                    with http.stream("POST", f"{replica.url}/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {keys[tenant]}", "x-request-id": rid}) as r:
                        content = r.read()
                except httpx.HTTPError:
                    continue  # the killed replica
                complete = b"data: [DONE]" in content if body["stream"] else _complete_json(content)
                if r.status_code == 200 and complete:
                    answered[rid] = replica.url
                    if replica is replicas[1] and killed.is_set():
                        survivor_after_kill.append(1)

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client, n) for n in range(16)]
            deadline = time.monotonic() + 30
            while len(answered) <= 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(replicas[0].process.pid, signal.SIGKILL)
            killed.set()
            for future in futures:
                future.result(timeout=120)
        assert len(survivor_after_kill) >= 100, "the survivor stopped answering"
        recorded = {row["request_id"] for row in query(database_url, "SELECT request_id FROM audit_events")}
        missing = [rid for rid in answered if rid not in recorded]
        by_replica = {url: sum(1 for u in answered.values() if u == url) for url in (r.url for r in replicas)}
        print(f"answered 200 by each replica: {by_replica}; missing records: {len(missing)}")
        assert missing == [], f"{len(missing)} of {len(answered)} answered requests have no record"
        verify = subprocess.run([str(BIN / "gateway"), "audit", "verify"], capture_output=True, text=True,
                                env={**os.environ, **env, "GATEWAY_VAR_DIR": str(tmp_path / "b" / "var")})
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        replicas[1].stop()
        as_superuser(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_streams_cut_by_a_sigkill_are_recorded_when_the_wrapper_starts_again(wrapper, tmp_path):
    """The provider had the prompt and the client part of an answer: the journal of streams in flight gives each
    its record (502 gateway_stopped) at the next start, in a chain that verifies."""
    ids = [f"cut-{uuid.uuid4().hex[:8]}-{n}" for n in range(6)]
    flowing = threading.Barrier(len(ids) + 1)

    def stream(rid: str) -> None:
        body = {"model": "long-stream", "stream": True, "messages": [{"role": "user", "content": rid}]}
        headers = {"authorization": f"Bearer {wrapper.keys['strict']}", "x-request-id": rid}
        try:
            with httpx.stream("POST", f"{wrapper.url}/v1/chat/completions", json=body, headers=headers,
                              timeout=30) as reply:
                for index, _ in enumerate(reply.iter_lines()):
                    if index == 2:
                        flowing.wait(20)
        except httpx.HTTPError:
            pass  # cut by the kill

    threads = [threading.Thread(target=stream, args=(rid,)) for rid in ids]
    for thread in threads:
        thread.start()
    flowing.wait(20)  # every stream has had content
    os.kill(wrapper.process.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(30)
    assert query(wrapper.database_url, "SELECT request_id FROM audit_events WHERE request_id = ANY($1)", ids) == []

    again = start_wrapper(tmp_path, wrapper.env, ready="/readyz")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = query(wrapper.database_url, "SELECT request_id, status, record FROM audit_events "
                                               "WHERE request_id = ANY($1)", ids)
            if len(rows) == len(ids):
                break
            time.sleep(0.2)
        assert sorted(row["request_id"] for row in rows) == sorted(ids)
        for row in rows:
            record = orjson.loads(row["record"])
            assert (row["status"], record["error_code"], record["model"]) == (502, "gateway_stopped", "long-stream")
            assert record["content"]["request_sha256"]  # what was sent, provable
        verify = gateway_verify(wrapper)
        assert verify.returncode == 0, verify.stdout
    finally:
        again.stop()
