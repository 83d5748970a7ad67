"""Chaos: what clients see, and what the audit log keeps, while parts of the stack fail (issue 21).

The stack (built by bench/soak.py, as bench/limits_proof.py builds its own): the fake provider, `gateway up`
(LiteLLM and the wrapper) on PostgreSQL (a database of its own) and Redis (database 9, for a limits policy that
never refuses), and a second wrapper replica in front of the same LiteLLM, sharing gateway.yaml, the audit signing
key and the audit log. Tenant `closed` keeps the defaults (no committed record, no answer: 503; no Redis, no
admission: 503); tenant `open` answers anyway (audit and limits `on_store_failure: open`: its records are spooled
and replayed later) and takes 4 of the 16 clients in the store phases (d-g).

Each phase is CHAOS_PHASE_SECONDS (24) of load from CHAOS_CLIENTS (16) clients, each request to the next replica in
turn, alternating whole answers (`chat`) and streams of 4 chunks (`stream`), each with its own x-request-id; a client
pauses 0.1 s after a failure. The fault starts a quarter of the way in. Per phase: requests sent; their statuses;
requests with no answer (connection errors; client timeouts, CHAOS_CLIENT_TIMEOUT 15 s); streams answered 200 that
did not end with `data: [DONE]` (cut, or an error event in its place); p50/p99 latency of every request; records
missing from audit_events, by request id, of the requests answered 200 in whole (and of the cut streams), after
waiting up to 20 s for spooled records to be replayed; `gateway audit verify`; and recovery: from the end of the
fault to the first whole 200 of a request sent after it. Phases (CHAOS_PHASES=a,b,... runs some, reported under
var/bench-chaos/ rather than over the full run's table):

  a baseline; b provider stalled (every call waits 60 s; LiteLLM's timeout is 4 s); c provider SIGKILLed, started
  again on its port; d the gateway's database connections terminated (pg_terminate_backend), three times; e the
  tenants' audit_heads rows locked FOR UPDATE by another session for ~10 s (the commit deadline is 2 s); f PostgreSQL
  restarted (pg_ctlcluster restart); g Redis shut down, started again; h LiteLLM SIGKILLed (`gateway up` starts it
  again); i the second replica SIGKILLed; j SIGTERM to `gateway up` with 20 streams of ~3 s in flight, and a new
  connection 0.5 s later.

Nothing is asserted: the table says what happened, with what the stack's logs said meanwhile (`gateway up`'s own
lines, and exceptions that ended a traceback). A phase that fails shows its error in its row and the bench goes on;
PostgreSQL, Redis and the fake provider are restored after every phase and at the end. CPU seconds of each process
per phase (/proc/<pid>/stat) in a second table. Writes bench/results/chaos.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.soak import (FAKE, PG_VERSION, REDIS_START, Call, Stack, ensure_services, one_call, proc_stat,  # noqa: E402
                        processes, revision, run_load, start_fake, start_stack, stop_stack)
from tests.support.audit_db import ADMIN_DSN, query  # noqa: E402
from tests.support.processes import BIN, ROOT, wait_until  # noqa: E402
from tests.support.wrapper import start_wrapper  # noqa: E402

SECONDS = float(os.environ.get("CHAOS_PHASE_SECONDS", 24))
CLIENTS = int(os.environ.get("CHAOS_CLIENTS", 16))
CLIENT_TIMEOUT = float(os.environ.get("CHAOS_CLIENT_TIMEOUT", 15))
NEVER_REFUSES = {"mode": "enforce", "requests_per_minute": 1_000_000}  # admission runs on Redis, refuses nobody
TENANTS = {"closed": {"models": list(FAKE), "limits": NEVER_REFUSES},
           "open": {"models": list(FAKE), "audit": {"on_store_failure": "open"},
                    "limits": {**NEVER_REFUSES, "on_store_failure": "open"}}}


# ---- faults: each runs while the load goes on, returns (when it ended, what happened) ----

async def run(*command: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, list(command), capture_output=True, text=True, timeout=120)


async def provider_stalled(stack: Stack) -> tuple[float, str]:
    async with httpx.AsyncClient(base_url=stack.fake_url, timeout=10) as fake:
        await fake.post("/_fake/behaviours", json={m: {**b, "stall_every": 1, "stall_ms": 60_000}
                                                   for m, b in FAKE.items()})
        try:
            await asyncio.sleep(SECONDS * 0.35)
        finally:
            await fake.post("/_fake/behaviours", json=FAKE)
    return time.monotonic(), f"every provider call stalled 60 s, for {SECONDS * 0.35:.0f} s"


async def provider_killed(stack: Stack) -> tuple[float, str]:
    os.killpg(stack.fake.pid, signal.SIGKILL)
    stack.fake.wait()
    await asyncio.sleep(SECONDS * 0.25)
    stack.fake = await asyncio.to_thread(start_fake, stack.fake_port, stack.workdir / "fake.log")
    return time.monotonic(), f"provider down {SECONDS * 0.25:.0f} s, then started again on its port"


async def connections_killed(stack: Stack) -> tuple[float, str]:
    killed = []
    for kill in range(3):
        await asyncio.sleep(SECONDS * 0.1 if kill else 0)
        rows = await asyncio.to_thread(query, ADMIN_DSN, "SELECT count(pg_terminate_backend(pid)) AS n FROM "
                                       "pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                                       stack.database)
        killed.append(str(rows[0]["n"]))
    return time.monotonic(), f"terminated {'+'.join(killed)} connections, {SECONDS * 0.1:.1f} s apart"


async def heads_locked(stack: Stack) -> tuple[float, str]:
    hold = min(10.0, SECONDS * 0.45)
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{stack.database}")
    try:
        async with connection.transaction():
            await connection.execute("SELECT * FROM audit_heads WHERE tenant IN ('closed', 'open') FOR UPDATE")
            await asyncio.sleep(hold)
    finally:
        await connection.close()
    return time.monotonic(), f"both tenants' heads locked {hold:.0f} s"


async def database_restarted(stack: Stack) -> tuple[float, str]:
    started = time.monotonic()
    done = await run("pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", "restart")
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster restart: {done.stderr.strip()[-200:]}")
    return time.monotonic(), f"the restart took {time.monotonic() - started:.1f} s"


async def redis_restarted(stack: Stack) -> tuple[float, str]:
    await run("redis-cli", "shutdown", "nosave")
    await asyncio.sleep(SECONDS * 0.25)
    await run(*REDIS_START)
    return time.monotonic(), f"Redis down {SECONDS * 0.25:.0f} s"


async def litellm_killed(stack: Stack) -> tuple[float, str]:
    pid = min(pid for pid, role in processes(stack).items() if role == "litellm")  # the one `gateway up` started
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < killed + SECONDS:
            try:
                if (await client.get(f"{stack.urls[0]}/readyz")).status_code == 200:
                    return killed, f"/readyz 200 again {time.monotonic() - killed:.1f} s after the kill"
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return killed, f"/readyz not 200 again within {SECONDS:.0f} s of the kill"


async def replica_killed(stack: Stack) -> tuple[float, str]:
    """SIGKILL, then started again 2 s later on a new port, as an orchestrator would (the clients keep calling the
    old one: no load balancer here); its journal records the streams the kill cut."""
    os.kill(stack.replica.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    await asyncio.sleep(2)
    stack.replica = await asyncio.to_thread(start_wrapper, stack.workdir / "b", stack.replica_env)
    return killed, "wrapper b SIGKILLed, started again 2 s later"


async def no_fault(stack: Stack) -> tuple[None, str]:
    return None, ""


PHASES = {"a": ("baseline", no_fault), "b": ("provider stalled", provider_stalled),
          "c": ("provider killed, restarted", provider_killed),
          "d": ("database connections killed", connections_killed),
          "e": ("audit heads locked ~10 s", heads_locked), "f": ("PostgreSQL restarted", database_restarted),
          "g": ("Redis stopped, restarted", redis_restarted), "h": ("LiteLLM SIGKILLed", litellm_killed),
          "i": ("replica b SIGKILLed", replica_killed), "j": ("SIGTERM to gateway up mid-stream", None)}


# ---- phases ----

async def restore(stack: Stack) -> str:
    done = [await asyncio.to_thread(ensure_services)]
    if stack.fake.poll() is not None:
        stack.fake = await asyncio.to_thread(start_fake, stack.fake_port, stack.workdir / "fake.log")
        done.append("fake provider started")
    async with httpx.AsyncClient(base_url=stack.fake_url, timeout=10) as fake:
        await fake.post("/_fake/behaviours", json=FAKE)
        await fake.delete("/_fake/log")  # the fake's request log would grow for the whole run
    return ", ".join(d for d in done if d)


async def run_phase(stack: Stack, key: str) -> dict:
    if key == "j":
        return await sigterm_phase(stack)
    title, fault = PHASES[key]
    with_open = key in "defg"
    load = asyncio.create_task(run_load(stack, SECONDS, CLIENTS, lambda i: "open" if with_open and i % 4 == 3
                                        else "closed", CLIENT_TIMEOUT))
    error, began, ended, notes = "", 0.0, None, ""
    try:
        await asyncio.sleep(SECONDS * 0.25)
        began = time.monotonic()
        ended, notes = await fault(stack)
    except Exception as exc:
        error = f"**error: {type(exc).__name__}: {exc}**"
    finally:
        try:
            restored = await restore(stack)
        except Exception as exc:
            restored = f"**{type(exc).__name__}: {exc}**"
    calls = await load
    if key == "e" and ended:  # what each tenant got while the lock was held (requests in flight then)
        for tenant in ("closed", "open"):
            mine = [c for c in calls if c.done > began and c.sent < ended and c.tenant == tenant]
            notes += f"; {tenant} during the lock: {statuses(mine) or 'none'}, slowest " \
                     f"{max((c.done - c.sent for c in mine), default=0):.2f} s"
    if key == "i" and ended:
        notes += f"; after the kill, wrapper a answered {statuses([c for c in calls if c.sent >= ended]) or '-'}"
        stack.urls = stack.urls[:1]  # no replica b from here on
    notes = "; ".join(n for n in (notes, error, restored and f"restored: {restored}") if n)
    return await summarise(stack, title, calls, ended, notes)


async def sigterm_phase(stack: Stack) -> dict:
    """20 streams of ~3 s; SIGTERM to `gateway up` 1 s in; a new connection 0.5 s after the signal."""
    url, key = stack.urls[0], stack.keys["closed"]
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=httpx.Limits(max_connections=40)) as client:
        streams = [asyncio.create_task(one_call(client, url, key, "closed", "long", True, CLIENT_TIMEOUT))
                   for _ in range(20)]
        await asyncio.sleep(1)
        in_flight = sum(not s.done() for s in streams)
        stack.gateway.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(timeout=5) as fresh:
            probe = await one_call(fresh, url, key, "closed", "chat", False)
        refused = {"conn": "refused", "timeout": "no answer in 5 s"}.get(probe.error, f"answered {probe.status}")
        calls = await asyncio.gather(*streams)
    code = await asyncio.to_thread(stack.gateway.wait, 30)
    notes = (f"{in_flight} of 20 streaming when signalled, {sum(c.complete for c in calls)} ended with `data: "
             f"[DONE]`; a new connection 0.5 s after the signal: {refused}; `gateway up` exited {code} "
             f"{time.monotonic() - signalled:.1f} s after it")
    return await summarise(stack, PHASES["j"][0], calls, None, notes)


async def summarise(stack: Stack, title: str, calls: list[Call], ended: float | None, notes: str) -> dict:
    answered = {c.request_id for c in calls if c.status == 200}
    whole = {c.request_id for c in calls if c.ok}
    missing, waited = set(answered), time.monotonic()
    while missing and time.monotonic() < waited + 20:  # a fail-open tenant's spooled records are replayed
        rows = await asyncio.to_thread(query, stack.database_url, "SELECT request_id FROM audit_events WHERE "
                                       "request_id = ANY($1::text[])", list(missing))
        missing -= {row["request_id"] for row in rows}
        await asyncio.sleep(1 if missing else 0)
    latencies = sorted(c.done - c.sent for c in calls)
    after = [c.done - ended for c in calls if ended and c.sent >= ended and c.ok]
    by_tenant = {t: statuses([c for c in calls if c.tenant == t]) for t in ("closed", "open")}
    cut = answered - whole
    shown = "; ".join(f"{t}: {s}" for t, s in by_tenant.items()) if by_tenant["open"] else by_tenant["closed"]
    return {"phase": title, "sent": len(calls), "statuses": shown,
            "conn": sum(c.status is None and c.error == "conn" for c in calls),
            "timeouts": sum(c.status is None and c.error == "timeout" for c in calls), "cut": len(cut),
            "p50": f"{pct(latencies, 50) * 1000:.0f}", "p99": f"{pct(latencies, 99) * 1000:.0f}",
            "missing": f"{len(missing & whole)} of {len(whole)}" + (f"; cut streams: {len(missing & cut)} of "
                                                                    f"{len(cut)}" if cut else ""),
            "verify": await verify(stack), "notes": notes,
            "recovery": "-" if ended is None else f"{min(after):.2f}" if after else "no 200 after it"}


def statuses(calls: list[Call]) -> str:
    """Counts by status; `200 cut`: a 200 that did not end whole (a stream without `data: [DONE]`)."""
    counts = Counter(f"{c.status}{' cut' if c.status == 200 and not c.complete else ''}" for c in calls if c.status)
    return ", ".join(f"{status}×{n}" for status, n in sorted(counts.items()))


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else 0.0


async def verify(stack: Stack) -> str:
    env = {**os.environ, **stack.env, "GATEWAY_VAR_DIR": str(stack.workdir / "var-cli")}
    try:
        done = await asyncio.to_thread(subprocess.run, [str(BIN / "gateway"), "--config", stack.env["GATEWAY_CONFIG"],
                                                        "audit", "verify"], capture_output=True, text=True, env=env,
                                       timeout=120)
    except subprocess.TimeoutExpired:
        return "no answer in 120 s"
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0:
        return "intact (" + ", ".join(line.replace(": intact,", "").replace(" records", "") for line in lines) + ")"
    bad = [line for line in lines if "NOT intact" in line] or (done.stderr.strip().splitlines() or ["?"])[-1:]
    return f"exit {done.returncode}: " + "; ".join(bad)


async def chaos(stack: Stack, chosen: list[str]) -> tuple[list[dict], list[tuple[str, dict[str, float]]]]:
    rows, cpu = [], []
    async with httpx.AsyncClient(timeout=30) as client:  # each tenant's chain head exists before anything locks it
        for tenant in TENANTS:
            await one_call(client, stack.urls[0], stack.keys[tenant], tenant, "chat", False)
    for key in chosen:
        try:
            await asyncio.to_thread(wait_until, f"{stack.urls[0]}/readyz", 90)
            unready = ""
        except (TimeoutError, RuntimeError):
            unready = "**/readyz was not 200 within 90 s before the phase**; "
        roles = processes(stack)
        before = {pid: proc_stat(pid) for pid in roles}
        logs = {log: log.stat().st_size for log in stack.workdir.glob("**/*.log") if log.name != "fake.log"}
        try:
            row = await run_phase(stack, key)
        except Exception as exc:  # the phase's own error, in its row; the bench goes on
            row = {"phase": PHASES[key][0], "notes": f"**error: {type(exc).__name__}: {exc}**"}
            with contextlib.suppress(Exception):
                await restore(stack)
        row["notes"] = unready + row["notes"] + logged(logs)
        used: dict[str, float] = {}
        for pid, role in roles.items():
            if (after := proc_stat(pid)) and before[pid]:
                used[role] = used.get(role, 0) + after[0] - before[pid][0]
        rows.append({"key": key, **row})
        cpu.append((f"{key}. {PHASES[key][0]}", used))
        print(f"[chaos] {key}: {row}", flush=True)
    return rows, cpu


def logged(logs: dict[Path, int]) -> str:
    """What the stack's logs said during the phase: `gateway up`'s own lines (a child exited) and the exceptions
    that ended a traceback (a child's crash, an error inside LiteLLM)."""
    said = []
    for log, since in logs.items():
        with log.open("rb") as out:
            out.seek(since)
            for line in out.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    line = str(json.loads(line).get("message", "")) if line.startswith("{") else line
                if line.startswith("[gateway]") or re.match(r"(\w+\.)*\w*(Error|Exception)(:|$)|Fatal Python",
                                                            line):
                    said.append(line.replace("[gateway] ", "")[:120])
    counts = Counter(said)
    return "".join(f"; log: {line}" + (f" (×{n})" if n > 1 else "") for line, n in counts.items())


COLUMNS = {"phase": "phase", "sent": "sent", "statuses": "statuses", "conn": "conn errors",
           "timeouts": "client timeouts", "cut": "streams without [DONE]", "p50": "p50 ms", "p99": "p99 ms",
           "missing": "records missing, of whole 200s", "verify": "audit verify", "recovery": "recovery s",
           "notes": "what happened"}


def render(rows: list[dict], cpu: list[tuple[str, dict[str, float]]], took: float) -> str:
    lines = [f"# Chaos ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {revision()}, {took / 60:.1f} min)", "",
             f"{CLIENTS} clients, {SECONDS:.0f} s a phase, the fault a quarter of the way in; two wrapper replicas "
             "(`gateway up` and a second wrapper) on one LiteLLM, PostgreSQL and Redis; the fake provider behind "
             "LiteLLM. Statuses per tenant where the fail-open tenant takes part (`closed` alone elsewhere); "
             "`200 cut`: answered 200 but not whole (a stream without `data: [DONE]`: cut, or an error event in its "
             "place). Recovery: from the end of the fault to the first whole 200 of a request sent after it "
             "(bench/chaos.py says how each figure is taken).", "",
             "| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = {**{name: "-" for name in COLUMNS}, **row, "phase": f"{row['key']}. {row['phase']}"}
        lines.append("| " + " | ".join(str(cells[name]).replace("|", "/") for name in COLUMNS) + " |")
    roles = sorted({role for _, used in cpu for role in used})
    lines += ["", "CPU seconds of each process during each phase (/proc/<pid>/stat; not of a process killed or "
              "started during the phase):", "", "| phase | " + " | ".join(roles) + " |", "|---|" + "---:|" * len(roles)]
    lines += [f"| {phase} | " + " | ".join(f"{used[r]:.1f}" if r in used else "-" for r in roles) + " |"
              for phase, used in cpu]
    return "\n".join(lines) + "\n"


def main() -> None:
    chosen = [k for k in PHASES if k in os.environ.get("CHAOS_PHASES", ",".join(PHASES)).split(",")]
    started, stack = time.monotonic(), None
    try:
        stack = start_stack("chaos", TENANTS, "redis://127.0.0.1:6379/9", replica=True)
        rows, cpu = asyncio.run(chaos(stack, chosen))
    finally:
        if stack is not None:
            stop_stack(stack)
        ensure_services()
    report = render(rows, cpu, time.monotonic() - started)
    print("\n" + report)
    path = ROOT / "bench" / "results" / "chaos.md" if chosen == list(PHASES) else \
        ROOT / "var" / "bench-chaos" / f"chaos_{''.join(chosen)}.md"  # some phases: not over the full run's
    path.write_text(report)


if __name__ == "__main__":
    main()
