"""The wrapper's own cost per request, by process and by step, measured in one run on this machine.

The wrapper runs alone in front of the fake provider (no LiteLLM: its noise would hide the wrapper's),
as in production (uvicorn, uvloop, httptools), in several variants started side by side:
  - audit on PostgreSQL (the production store), tracing off: the reference;
  - the same, traced (OpenTelemetry spans exported to a local OTLP stand-in);
  - the same on a database with `synchronous_commit = off` (bench only: never acceptable for the audit log),
    which shows what the durable commit's flush costs;
  - audit on the embedded SQLite default.
Tenants of one config switch the per-tenant steps: PII off, PII enforced (redact), audit content `full`.
Auth, metrics and the audit record cannot be switched off (they are what the gateway is); their cost per call
is timed in process at the end.

For each: CPU time per request of each process (from /proc: the wrapper, PostgreSQL's processes, the fake
provider, the load generator) at concurrency 8 and at a fixed rate (CPU per request rises at low rates on
this VM), requests/s at concurrency 16, and the c=1 hop (p50 through the wrapper minus p50 of the fake
provider, paired in alternating blocks). Prints markdown and writes bench/results/hot_path.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import closed_loop, cpu_of, open_loop, pids_named, request_bytes  # noqa: E402
from tests.support.audit_db import as_superuser  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.otlp_stub import OtlpStubProcess  # noqa: E402
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config  # noqa: E402
from tests.support.wrapper import write_tenants  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("BENCH_SECONDS", 6))
RATE = float(os.environ.get("BENCH_RATE", 300))
LATENCY_ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", 10))
LATENCY_BLOCK = int(os.environ.get("BENCH_LATENCY_BLOCK", 200))
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]}
PII_CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Mail jane.doe@example.com or call +1 415 555 0100."}]}
TENANTS = {
    "plain": {"models": ["*"]},
    "pii": {"models": ["*"], "pii": {"mode": "enforce", "action": "redact"}},
    "full": {"models": ["*"], "audit": {"content": "full"}},
}



def measure(port: int, pid: int, request: bytes, seconds: float = SECONDS) -> dict:
    """CPU µs per request by process at c=8 and at a fixed rate, and req/s at c=16."""
    fake_pid = FAKE.pid
    row = {}
    closed_loop("127.0.0.1", port, request, 8, total=300)  # warm
    for label, run_load in (("c8", lambda: closed_loop("127.0.0.1", port, request, 8, seconds=seconds)),
                            ("rate", lambda: open_loop("127.0.0.1", port, request, RATE, seconds))):
        postgres = pids_named("postgres")
        before = (cpu_of([pid]), cpu_of(postgres), cpu_of([fake_pid]))
        run = run_load()
        postgres_after = pids_named("postgres")
        after = (cpu_of([pid]), cpu_of(postgres_after), cpu_of([fake_pid]))
        assert run.non_200() == 0, run.statuses
        # PostgreSQL connections opened during the run count from zero (the pool grows at most once).
        row[label] = {"rate": run.rate, "wrapper": (after[0] - before[0]) / run.count * 1e6,
                      "postgres": (after[1] - before[1]) / run.count * 1e6, "fake": (after[2] - before[2]) / run.count * 1e6,
                      "client": run.client_cpu_seconds / run.count * 1e6, "p50": run.p50}
    run = closed_loop("127.0.0.1", port, request, 16, seconds=seconds)
    assert run.non_200() == 0, run.statuses
    row["c16"] = run.rate
    return row


def hop_latency(targets: dict[str, tuple[int, bytes]]) -> dict[str, list[float]]:
    """Block p50s at c=1, the targets alternated (order rotated) so that all see the same drift."""
    blocks: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for round_index in range(LATENCY_ROUNDS):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            port, request = targets[name]
            closed_loop("127.0.0.1", port, request, 1, total=20)
            run = closed_loop("127.0.0.1", port, request, 1, total=LATENCY_BLOCK, keep_headers=LATENCY_BLOCK)
            assert run.non_200() == 0, run.statuses
            blocks[name].append(run.p50)
            if name != "fake provider":
                overheads = [float(h[b"x-gateway-overhead-ms"]) for h in run.header_samples if b"x-gateway-overhead-ms" in h]
                SELF_REPORTED.setdefault(name, []).append(statistics.median(overheads))
    return blocks


def paired(blocks: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x - y for x, y in zip(blocks[a], blocks[b], strict=True))


SELF_REPORTED: dict[str, list[float]] = {}
FAKE = None


def main() -> None:
    global FAKE
    workdir = ROOT / "var" / "bench-hot-path"
    workdir.mkdir(parents=True, exist_ok=True)
    processes = []
    stand_in = OtlpStubProcess(workdir / "otlp.log", count_only=True)
    databases = {name: f"gw_hot_{name}_{os.getpid()}" for name in ("pg", "traced", "nosync")}
    for name, database in databases.items():
        as_superuser(f'CREATE DATABASE "{database}"', ADMIN_DSN)
    as_superuser(f'ALTER DATABASE "{databases["nosync"]}" SET synchronous_commit = off', ADMIN_DSN)
    try:
        fake_port = free_port()
        FAKE = start([str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(fake_port),
                      "--behaviours", orjson.dumps({"bench": {}}).decode()], workdir / "fake.log")
        processes.append(FAKE)
        wait_until(f"http://127.0.0.1:{fake_port}/_fake/log", 20, FAKE, workdir / "fake.log")
        stand_in.start()
        litellm_config = write_litellm_config(workdir / "litellm.yaml", f"http://127.0.0.1:{fake_port}", {"bench": {}})
        gateway_config = workdir / "gateway.yaml"
        keys = write_tenants(gateway_config, TENANTS)

        variants = {
            "PostgreSQL": {"GATEWAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{databases['pg']}"},
            "PostgreSQL, traced": {"GATEWAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{databases['traced']}",
                                   "OTEL_EXPORTER_OTLP_ENDPOINT": stand_in.url},
            "PostgreSQL, synchronous_commit off": {
                "GATEWAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{databases['nosync']}"},
            "SQLite (default)": {},
        }
        wrappers: dict[str, tuple[int, int]] = {}
        for name, extra in variants.items():
            port = free_port()
            env = {"GATEWAY_LITELLM_PORT": str(fake_port), "GATEWAY_INTERNAL_SECRET": "bench-secret",
                   "GATEWAY_LITELLM_CONFIG": str(litellm_config), "GATEWAY_CONFIG": str(gateway_config),
                   "GATEWAY_VAR_DIR": str(workdir / f"var-{len(wrappers)}"), **extra}
            gateway_cli(gateway_config, "db", "upgrade", env=env)
            log = workdir / f"wrapper-{len(wrappers)}.log"
            process = start([str(BIN / "python"), "-m", "uvicorn", "wrapper.app:create_app", "--factory",
                             "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                             "--no-proxy-headers", "--log-level", "warning"], log, env)
            processes.append(process)
            wait_until(f"http://127.0.0.1:{port}/healthz", 60, process, log)
            wrappers[name] = (port, process.pid)

        def request_for(port: int, tenant: str, body: dict = CHAT) -> bytes:
            return request_bytes("127.0.0.1", port, "/v1/chat/completions", orjson.dumps(body),
                                 {"content-type": "application/json", "authorization": f"Bearer {keys[tenant]}"})

        rows: dict[str, dict] = {}
        fake_request = request_bytes("127.0.0.1", fake_port, "/v1/chat/completions", orjson.dumps(CHAT),
                                     {"content-type": "application/json"})
        rows["fake provider alone"] = measure(fake_port, FAKE.pid, fake_request)
        cases = [(name, "plain", CHAT) for name in variants] + [
            ("PostgreSQL", "pii", PII_CHAT), ("PostgreSQL", "full", CHAT)]
        for variant, tenant, body in cases:
            label = variant if tenant == "plain" else f"{variant}, {'PII redact' if tenant == 'pii' else 'audit content full'}"
            port, pid = wrappers[variant]
            rows[label] = measure(port, pid, request_for(port, tenant, body))
            print(f"{label}: {rows[label]}", flush=True)

        latency_targets = {"fake provider": (fake_port, fake_request)}
        latency_targets.update({name: (wrappers[name][0], request_for(wrappers[name][0], "plain")) for name in variants})
        blocks = hop_latency(latency_targets)
    finally:
        for process in reversed(processes):
            stop(process)
        stand_in.stop()
        for database in databases.values():
            as_superuser(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', ADMIN_DSN)

    report = render(rows, blocks, in_process_costs())
    print("\n" + report)
    (ROOT / "bench" / "results" / "hot_path.md").write_text(report)


def in_process_costs() -> list[tuple[str, float]]:
    """What the steps that are always on cost per call, timed in this process (µs, median of 5 runs)."""
    from bench.step_costs import step_costs
    return step_costs()


def render(rows: dict[str, dict], blocks: dict[str, list[float]], steps: list[tuple[str, float]]) -> str:
    reference = rows["PostgreSQL"]
    lines = [
        f"# The wrapper's hot path\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. The wrapper alone in front of the fake provider (uvicorn, uvloop, httptools), "
        f"metrics on, one chat request (22 tokens) per call. CPU per request from /proc over {SECONDS:.0f} s at "
        f"concurrency 8 and at a fixed {RATE:.0f} req/s; req/s at concurrency 16; load generator bench/loadgen.py.\n",
        "| variant | wrapper CPU µs/req (c=8) | PostgreSQL µs/req | fake µs/req | load gen µs/req | wrapper CPU µs/req "
        f"({RATE:.0f} req/s) | req/s (c=8) | req/s (c=16) | vs fake alone (c=16) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fake_rate = rows["fake provider alone"]["c16"]
    for name, row in rows.items():
        c8, rate = row["c8"], row["rate"]
        lines.append(f"| {name} | {c8['wrapper']:.0f} | {c8['postgres']:.0f} | {c8['fake']:.0f} | {c8['client']:.0f} | "
                     f"{rate['wrapper']:.0f} | {c8['rate']:.0f} | {row['c16']:.0f} | {row['c16'] / fake_rate:.2f} |")
    lines += ["", "The c=1 hop (p50 through the wrapper minus p50 of the fake provider, median of "
              f"{LATENCY_ROUNDS} paired rounds of {LATENCY_BLOCK} requests), and the wrapper's self-reported time "
              "(`x-gateway-overhead-ms`, the audit commit included):", "",
              "| variant | c=1 p50 ms | hop ms | self-reported ms |", "|---|---:|---:|---:|"]
    lines.append(f"| fake provider | {statistics.median(blocks['fake provider']):.2f} | - | - |")
    for name in blocks:
        if name == "fake provider":
            continue
        lines.append(f"| {name} | {statistics.median(blocks[name]):.2f} | {paired(blocks, name, 'fake provider'):.2f} | "
                     f"{statistics.median(SELF_REPORTED[name]):.2f} |")
    flush_share = paired(blocks, "PostgreSQL", "PostgreSQL, synchronous_commit off")
    goals = [
        ("wrapper CPU per request at c=8 (PostgreSQL, tracing off)", f"{reference['c8']['wrapper']:.0f} µs", "<= 350 µs",
         reference["c8"]["wrapper"] <= 350),
        ("wrapper alone, req/s at c=16", f"{reference['c16']:.0f}", ">= 2,500", reference["c16"] >= 2500),
        ("c=1 hop on PostgreSQL", f"{paired(blocks, 'PostgreSQL', 'fake provider'):.2f} ms", "<= 1.5 ms",
         paired(blocks, "PostgreSQL", "fake provider") <= 1.5),
        ("c=1 hop on SQLite", f"{paired(blocks, 'SQLite (default)', 'fake provider'):.2f} ms", "<= 1.5 ms",
         paired(blocks, "SQLite (default)", "fake provider") <= 1.5),
    ]
    lines += ["", f"The durable commit's own share of the PostgreSQL hop (synchronous_commit on - off, paired): "
              f"**{flush_share:.2f} ms**.", "", "| goal | measured | target | |", "|---|---:|---:|---|"]
    lines += [f"| {goal} | {value} | {target} | {'met' if ok else 'NOT met'} |" for goal, value, target, ok in goals]
    lines += ["", "Steps that are always on, timed in process (µs per call, median of 5 runs):", "",
              "| step | µs |", "|---|---:|"]
    lines += [f"| {name} | {micros:.1f} |" for name, micros in steps]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
