"""Soak: memory of every process of the full stack over SOAK_SECONDS (default 600) of steady load (issue 21).

The stack: the fake provider and `gateway up` (LiteLLM and the wrapper) on PostgreSQL (a database of its own,
audit fail-closed) with GATEWAY_REDIS_URL set (Redis database 10, emptied first) and a limits policy on that never
refuses (requests, tokens and concurrency, so admission runs its scripts on Redis for every request). SOAK_CLIENTS
(32) clients send whole answers and streams of 4 chunks in turn, each with its own x-request-id, as fast as they
are answered (a client pauses 0.1 s after a failure).

Every SOAK_SAMPLE_SECONDS (10) the resident set (VmRSS of /proc/<pid>/status) of each process: `gateway up`, its
children (LiteLLM and any workers, the wrapper) and the fake provider, whose own request log is emptied at each
sample so that it measures the provider, not the bench. The table of samples (the last taken once the last request
has ended); then, per process, RSS at 1 minute vs at the end, growth in MB and %, and CPU seconds; requests per
second; errors (anything but a whole 200); records in audit_events vs answers. The bound checked: growth after the
first minute within 10 % for each process (PASS/FAIL, not asserted; a process restarted meanwhile fails it).
Writes bench/results/soak.md. bench/chaos.py reuses the stack and the load defined here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.audit_db import as_superuser, query  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config  # noqa: E402
from tests.support.wrapper import LoneWrapper, start_wrapper  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", 600))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", 32))
SAMPLE_SECONDS = float(os.environ.get("SOAK_SAMPLE_SECONDS", 10))
BOUND_PERCENT = 10
PG_VERSION = sorted(os.listdir("/etc/postgresql"))[0] if os.path.isdir("/etc/postgresql") else "15"
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
               "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]  # as .ci/run
# The fake provider's models: whole answers, streams of 4 chunks, and chaos's long streams (~3 s).
FAKE = {"chat": {"latency_ms": 20}, "stream": {"chunks": 4, "chunk_interval_ms": 20},
        "long": {"chunks": 30, "chunk_interval_ms": 100}}
# Priced (so records carry a cost); a provider that stalls is given up on by LiteLLM after 4 s.
LITELLM_MODEL = {"input_cost_per_token": 0.0001, "output_cost_per_token": 0.0002, "timeout": 4, "stream_timeout": 4}
LIMITS = {"mode": "enforce", "requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000,
          "concurrency": 10_000}
HI = [{"role": "user", "content": "hi"}]


# ---- the stack and its load (bench/chaos.py uses them too) ----

@dataclass
class Stack:
    workdir: Path
    database: str
    fake: subprocess.Popen
    fake_port: int
    env: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    gateway: subprocess.Popen | None = None
    replica: LoneWrapper | None = None
    replica_env: dict[str, str] = field(default_factory=dict)  # to start it again (bench/chaos.py, phase i)
    urls: list[str] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.database}"

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.fake_port}"


def start_fake(port: int, log: Path) -> subprocess.Popen:
    """The fake provider on a given port (so that it can be started again where LiteLLM expects it)."""
    process = start([str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(port),
                     "--behaviours", json.dumps(FAKE)], log)
    wait_until(f"http://127.0.0.1:{port}/_fake/log", 20, process, log)
    return process


def start_stack(name: str, tenants: dict, redis_url: str, replica: bool) -> Stack:
    workdir = ROOT / "var" / f"bench-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("**/*.log"):
        log.unlink()  # this run's logs only
    redis.Redis.from_url(redis_url).flushdb()
    database = f"gw_{name}_{uuid.uuid4().hex[:8]}"
    as_superuser(f'CREATE DATABASE "{database}"')
    fake_port = free_port()
    stack = Stack(workdir, database, start_fake(fake_port, workdir / "fake.log"), fake_port)
    try:  # whatever started is stopped again if the rest fails
        litellm_config = write_litellm_config(workdir / "litellm_config.yaml", stack.fake_url,
                                              {model: LITELLM_MODEL for model in FAKE})
        config = workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump({"tenants": tenants}))
        stack.keys = {t: gateway_cli(config, "keys", "create", "--tenant", t, "--name", "bench") for t in tenants}
        stack.env = {"GATEWAY_LITELLM_MASTER_KEY": f"sk-{name}-master", "GATEWAY_INTERNAL_SECRET": f"{name}-secret",
                     "GATEWAY_DATABASE_URL": stack.database_url, "GATEWAY_REDIS_URL": redis_url,
                     "GATEWAY_CONFIG": str(config), "GATEWAY_LITELLM_CONFIG": str(litellm_config),
                     # one key: both replicas sign alike, and the CLI verifies what either signed
                     "GATEWAY_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
                     "PYTHONFAULTHANDLER": "1"}  # a child that crashes leaves its Python stack in the log
        port, litellm_port = free_port(), free_port()
        stack.gateway = start([str(BIN / "gateway"), "up"], workdir / "gateway.log",
                              {**stack.env, "GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(litellm_port),
                               "GATEWAY_VAR_DIR": str(workdir / "var-a")})
        stack.urls = [f"http://127.0.0.1:{port}"]
        wait_until(f"{stack.urls[0]}/readyz", 120, stack.gateway, workdir / "gateway.log")
        if replica:
            (workdir / "b").mkdir(exist_ok=True)
            stack.replica_env = {**stack.env, "GATEWAY_LITELLM_PORT": str(litellm_port)}
            stack.replica = start_wrapper(workdir / "b", stack.replica_env)
            stack.urls.append(stack.replica.url)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    for process in (stack.replica.process if stack.replica else None, stack.gateway, stack.fake):
        if process is not None:
            stop(process)
    ensure_services()
    as_superuser(f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')


def ensure_services() -> str:
    """PostgreSQL and Redis running (started as this machine starts them, when they are not); what was done."""
    def pg_up() -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0

    def redis_up() -> bool:
        return subprocess.run(["redis-cli", "ping"], capture_output=True).returncode == 0

    done = []
    if not pg_up():
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", "start"], check=False)
        done.append("PostgreSQL started")
    if not redis_up():
        subprocess.run(REDIS_START, check=False)
        done.append("Redis started")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (pg_up() and redis_up()):
        time.sleep(0.2)
    return ", ".join(done)


def processes(stack: Stack) -> dict[int, str]:
    """pid -> role of each process of the stack: `gateway up` and its descendants, the replica, the fake provider."""
    table = [line.split(None, 2) for line in subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True,
                                                             text=True).stdout.splitlines()]
    roles = {stack.fake.pid: "fake provider"}
    if stack.replica and stack.replica.process.poll() is None:
        roles[stack.replica.process.pid] = "wrapper b"
    if stack.gateway and stack.gateway.poll() is None:
        roles[stack.gateway.pid] = "gateway up"
        frontier = {stack.gateway.pid}
        while frontier:
            children = {int(pid): args for pid, ppid, *args in table if int(ppid) in frontier}
            roles |= {pid: "wrapper" if "wrapper.app" in "".join(args) else "litellm" if "litellm" in "".join(args)
                      else "other" for pid, args in children.items()}
            frontier = set(children)
    return roles


def proc_stat(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, RSS in MB) of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(rss.split()[1]) / 1024


@dataclass
class Call:
    tenant: str
    request_id: str
    sent: float
    done: float = 0.0
    status: int | None = None  # None: no answer (see error)
    error: str = ""  # conn | timeout
    complete: bool = False  # a 200 with its whole body: the JSON answer, or a stream to `data: [DONE]`

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.complete


async def one_call(client: httpx.AsyncClient, url: str, key: str, tenant: str, model: str, stream: bool,
                   timeout: float = 15) -> Call:
    call = Call(tenant, uuid.uuid4().hex, time.monotonic())
    body = {"model": model, "messages": HI, **({"stream": True} if stream else {})}
    headers = {"authorization": f"Bearer {key}", "x-request-id": call.request_id}
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as reply:
                call.status = reply.status_code
                if stream and reply.status_code == 200:
                    async for line in reply.aiter_lines():
                        if line.startswith('data: {"error"'):
                            break  # an error event in place of the end: not a whole answer
                        call.complete = call.complete or line.strip() == "data: [DONE]"
                else:
                    call.complete = reply.status_code == 200 and b'"choices"' in await reply.aread()
    except (TimeoutError, httpx.TimeoutException):
        call.error = "timeout"
    except httpx.TransportError:
        call.error = "conn"
    call.done = time.monotonic()
    return call


async def run_load(stack: Stack, seconds: float, clients: int, tenant_of, timeout: float = 15,
                   calls: list[Call] | None = None) -> list[Call]:
    """`clients` workers, each request to the next replica, whole answers and streams in turn, until time is up;
    each call appended to `calls` as it ends (a list of the caller's, to watch it grow)."""
    urls, deadline, calls = list(stack.urls), time.monotonic() + seconds, [] if calls is None else calls
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        async def worker(index: int) -> None:
            tenant, turn = tenant_of(index), index
            while time.monotonic() < deadline:
                stream = turn % 2 == 1
                call = await one_call(client, urls[turn % len(urls)], stack.keys[tenant], tenant,
                                      "stream" if stream else "chat", stream, timeout)
                calls.append(call)
                turn += 1
                if not call.ok:
                    await asyncio.sleep(0.1)  # a refusal comes back at once: a client backs off a little

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return calls


# ---- the soak ----

def sample(stack: Stack, at: float, calls: list[Call]) -> dict:
    """RSS (MB) and CPU seconds of each process now, labelled by role (and pid, where a role has several)."""
    roles = processes(stack)
    count = Counter(roles.values())
    found = {(role if count[role] == 1 else f"{role} {pid}", pid): proc_stat(pid) for pid, role in roles.items()}
    return {"at": at, "requests": len(calls), "errors": sum(not c.ok for c in calls),
            "rss": {label: stat[1] for (label, _), stat in found.items() if stat},
            "cpu": {label: stat[0] for (label, _), stat in found.items() if stat},
            "pid": {label: pid for (label, pid), stat in found.items() if stat}}


async def soak(stack: Stack) -> tuple[list[dict], list[Call]]:
    calls: list[Call] = []
    started = time.monotonic()
    load = asyncio.create_task(run_load(stack, SECONDS, CLIENTS, lambda worker: "soak", calls=calls))
    samples = []
    async with httpx.AsyncClient(base_url=stack.fake_url, timeout=30) as fake:
        while True:
            await fake.delete("/_fake/log")  # the fake keeps every request it was sent: the bench's memory, not its
            samples.append(sample(stack, time.monotonic() - started, calls))
            print(f"[soak] {samples[-1]['at']:.0f} s: {len(calls)} requests, "
                  + ", ".join(f"{k} {v:.0f} MB" for k, v in samples[-1]["rss"].items()), flush=True)
            if load.done():
                break
            next_at = started + SAMPLE_SECONDS * len(samples)
            await asyncio.wait([load], timeout=max(0.0, next_at - time.monotonic()))
    await load  # its errors, if any
    return samples, calls


def render(samples: list[dict], calls: list[Call], records: int, took: float) -> str:
    labels = list(dict.fromkeys(label for s in samples for label in s["rss"]))
    first = next((s for s in samples if s["at"] >= 60), samples[-1])  # at 1 minute: warmed up
    last = samples[-1]
    ran = last["at"]
    statuses = Counter(c.status if c.status else c.error for c in calls)
    answered = sum(c.status == 200 for c in calls)
    lines = [f"# Soak ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {revision()}, {took / 60:.1f} min in all)", "",
             "`gateway up` (LiteLLM and the wrapper) on PostgreSQL, with Redis for a limits policy that never refuses; "
             f"the fake provider behind LiteLLM; {CLIENTS} clients, whole answers and streams of 4 chunks in turn, "
             f"for {ran:.0f} s. RSS (VmRSS) of each process every {SAMPLE_SECONDS:.0f} s (bench/soak.py says how).",
             "", "| time s | requests | errors | " + " | ".join(f"{label} MB" for label in labels) + " |",
             "|---:|---:|---:|" + "---:|" * len(labels)]
    for s in samples:
        lines.append(f"| {s['at']:.0f} | {s['requests']} | {s['errors']} | "
                     + " | ".join(f"{s['rss'][label]:.1f}" if label in s["rss"] else "-" for label in labels) + " |")
    lines += ["", f"Growth from {first['at']:.0f} s to the end ({last['at']:.0f} s), bound: within {BOUND_PERCENT} %:",
              "", "| process | RSS at 1 min MB | RSS at the end MB | growth MB | growth % | CPU s | within bound |",
              "|---|---:|---:|---:|---:|---:|:---:|"]
    verdicts = []
    for label in labels:
        if label not in first["rss"] or label not in last["rss"]:
            lines.append(f"| {label} | - | - | - | - | - | not running throughout |")
            verdicts.append(False)
            continue
        before, after = first["rss"][label], last["rss"][label]
        grew = (after - before) / before * 100
        same = first["pid"][label] == last["pid"][label]
        verdicts.append(grew <= BOUND_PERCENT and same)
        lines.append(f"| {label} | {before:.1f} | {after:.1f} | {after - before:+.1f} | {grew:+.1f} | "
                     f"{last['cpu'][label] - samples[0]['cpu'].get(label, 0):.0f} | "
                     f"{('PASS' if grew <= BOUND_PERCENT else '**FAIL**') if same else '**FAIL** (restarted)'} |")
    lines += ["", f"- Requests: {len(calls)} in {ran:.0f} s, **{len(calls) / ran:.1f} req/s**; "
              f"statuses: {', '.join(f'{k}×{v}' for k, v in sorted(statuses.items(), key=str))}.",
              f"- Errors (anything but a whole 200: other statuses, no answer, streams without `data: [DONE]`): "
              f"**{sum(not c.ok for c in calls)}**.",
              f"- Audit records of the tenant: {records}, for {answered} answers 200 (and the others' records).",
              f"- p50 / p99 latency: {pct([c.done - c.sent for c in calls], 50) * 1000:.0f} / "
              f"{pct([c.done - c.sent for c in calls], 99) * 1000:.0f} ms.",
              f"- Memory growth after the first minute within {BOUND_PERCENT} % for every process: "
              f"**{'PASS' if all(verdicts) else 'FAIL'}**."]
    return "\n".join(lines) + "\n"


def revision() -> str:
    """The code measured: its commit, and whether the work tree differed from it (read-only git)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    return f"commit {head.strip() or '?'}" + (" with uncommitted changes" if dirty else "")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else 0.0


def main() -> None:
    started, stack = time.monotonic(), None
    try:
        stack = start_stack("soak", {"soak": {"models": list(FAKE), "limits": LIMITS}}, "redis://127.0.0.1:6379/10",
                            replica=False)
        samples, calls = asyncio.run(soak(stack))
        records = query(stack.database_url, "SELECT count(*) AS n FROM audit_events WHERE tenant = 'soak'")[0]["n"]
    finally:
        if stack is not None:
            stop_stack(stack)
    report = render(samples, calls, records, time.monotonic() - started)
    print("\n" + report)
    (ROOT / "bench" / "results" / "soak.md").write_text(report)


if __name__ == "__main__":
    main()
