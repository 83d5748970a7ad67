"""Overhead of the wrapper over bare LiteLLM, measured in one run on this machine.

Targets on loopback, all answered by the fake provider:
  (a) the fake provider directly, (b) bare LiteLLM on the same model list, as shipped
  (its own key auth, the openai SDK path, one worker) and tuned as `gateway up` runs it
  (the master-key auth, the newer OpenAI handler), (c) full stacks (`gateway up`: wrapper +
  LiteLLM with the gateway's callbacks): traced, untraced, untraced with two LiteLLM workers,
  and the wrapper alone in front of the fake provider, traced and untraced.
Measures p50/p99 latency at concurrency 1, requests/s at concurrency 16, and
time to first token of a stream for (b) and (c), as separate phases. Latency at
c=1 drifts by milliseconds over seconds on this shared machine, so it is taken
in many short blocks that alternate between the targets (order rotated each
round), and differences are paired by round. A burst at c=16 leaves LiteLLM
logging in background tasks, so each one is followed by a few quiet seconds.
The wrapper runs as in production, with its audit log on PostgreSQL: every
request's record is committed before its answer ends, so each wrapper request
per second is also an audit record per second (checked against the database).
Metrics, stream costs, Langfuse traces (from LiteLLM) and OpenTelemetry spans
(from the wrapper) are on, exported to a local OTLP stand-in; a second full
stack with tracing off shows what tracing itself costs. Beside latency, the CPU
time per request of each target's processes (from /proc). Load generator:
bench/loadgen.py (aiohttp for streams).
Prints a markdown table and writes it to bench/results/overhead.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import closed_loop, cpu_of, pids_named, process_tree, request_bytes  # noqa: E402
from custom_callbacks.seal import sealed_metadata  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.otlp_stub import OtlpStubProcess  # noqa: E402
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config  # noqa: E402
from wrapper.cli.up import LITELLM_OFFLINE_ENV, litellm_tuning  # noqa: E402
from wrapper.settings import Settings  # noqa: E402

MASTER_KEY = "sk-bench-master-key"
INTERNAL_SECRET = "bench-internal-secret"
MODELS = {"bench": {}, "bench-stream": {"chunks": 5}}
ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))  # throughput and TTFT
LATENCY_ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", 15))
LATENCY_BLOCK = int(os.environ.get("BENCH_LATENCY_BLOCK", 100))
LATENCY_WARMUP = 20
OUTAGE_ROUNDS = int(os.environ.get("BENCH_OUTAGE_ROUNDS", 6))
COOL_DOWN_SECONDS = float(os.environ.get("BENCH_COOL_DOWN_SECONDS", 3))
THROUGHPUT_SECONDS = float(os.environ.get("BENCH_THROUGHPUT_SECONDS", 5))
TTFT_REQUESTS = int(os.environ.get("BENCH_TTFT_REQUESTS", 100))
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]}
STREAM = {**CHAT, "model": "bench-stream", "stream": True}
# For the stack's own LiteLLM called directly: the body the wrapper would send (sealed metadata).
_IDENTITY = {"gateway_request_id": "bench", "gateway_tenant_id": "bench", "gateway_credential_id": "key:bench"}


SENT: dict[str, int] = {}  # base url -> requests answered 200


async def timed_post(session, url, headers, body) -> tuple[float, dict]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        assert response.status == 200, (url, response.status, await response.text())
        SENT[url] = SENT.get(url, 0) + 1
        return time.perf_counter() - started, dict(response.headers)


def body_for(payload: dict, sealed: bool) -> bytes:
    if not sealed:
        return orjson.dumps(payload)
    upstream = {**payload, "stream_options": {"include_usage": True}} if payload.get("stream") else payload
    return orjson.dumps({**upstream, "metadata": sealed_metadata(INTERNAL_SECRET.encode(), upstream, _IDENTITY)})


def _request(url: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    port = int(host_port.rsplit(":", 1)[1])
    return port, request_bytes("127.0.0.1", port, "/v1/chat/completions", body, headers)


def latency_block(url, headers, sealed) -> tuple[list[float], list[float]]:
    """One block of sequential requests: latencies (ms) and the wrapper's self-reported times."""
    port, request = _request(url, headers, body_for(CHAT, sealed))
    closed_loop("127.0.0.1", port, request, 1, total=LATENCY_WARMUP)
    run = closed_loop("127.0.0.1", port, request, 1, total=LATENCY_BLOCK, keep_headers=LATENCY_BLOCK)
    assert run.non_200() == 0, (url, run.statuses)
    SENT[url] = SENT.get(url, 0) + LATENCY_BLOCK + LATENCY_WARMUP
    overheads = [float(h[b"x-gateway-overhead-ms"]) for h in run.header_samples if b"x-gateway-overhead-ms" in h]
    return run.latencies_ms, overheads


def throughput(url, headers, sealed, pids: list[int], concurrency=16) -> tuple[float, float]:
    """Requests/s at this concurrency, and the CPU ms per request of the target's processes (PostgreSQL's included)."""
    port, request = _request(url, headers, body_for(CHAT, sealed))
    postgres = pids_named("postgres")
    before = cpu_of(pids) + cpu_of(postgres)
    run = closed_loop("127.0.0.1", port, request, concurrency, seconds=THROUGHPUT_SECONDS)
    cpu = cpu_of(pids) + cpu_of(pids_named("postgres")) - before
    assert run.non_200() == 0, (url, run.statuses)
    SENT[url] = SENT.get(url, 0) + run.count
    # LiteLLM finishes logging a burst in background tasks after answering it: let that work end
    # before the next target is measured, or the next target pays for it.
    time.sleep(COOL_DOWN_SECONDS)
    return run.rate, cpu / run.count * 1000


async def time_to_first_token(session, url, headers, sealed) -> float:
    body = body_for(STREAM, sealed)
    samples = []
    for index in range(TTFT_REQUESTS + 10):
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as response:
            assert response.status == 200
            SENT[url] = SENT.get(url, 0) + 1
            first = None
            async for line in response.content:
                if first is None and line.startswith(b"data:") and b'"content"' in line:
                    first = time.perf_counter() - started
        if index >= 10:
            samples.append(first * 1000)
    return statistics.median(samples)


def rotated(names: list[str], shift: int) -> list[str]:
    """The targets in a different order each round, so that no target always follows the same one."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def measure(targets: dict[str, tuple[str, dict, bool, list[int]]]) -> dict[str, dict]:
    """Latency, throughput and TTFT as separate phases, each alternating between the targets."""
    names = list(targets)
    results: dict[str, dict] = {name: {"blocks": [], "samples": [], "overheads": [], "rps": [], "cpu": [], "ttft": []}
                                for name in names}
    # Latency at c=1 drifts by milliseconds over seconds here (a shared VM): short blocks,
    # alternated, so that every target sees the same drift and differences can be paired by round.
    for round_index in range(LATENCY_ROUNDS):
        for name in rotated(names, round_index):
            base, headers, sealed, _ = targets[name]
            samples, overheads = latency_block(f"{base}/v1/chat/completions", headers, sealed)
            results[name]["blocks"].append(statistics.median(samples))
            results[name]["samples"] += samples
            results[name]["overheads"] += overheads
        print(f"latency round {round_index + 1}/{LATENCY_ROUNDS}: "
              + ", ".join(f"{n}={results[n]['blocks'][-1]:.2f}" for n in names), flush=True)
    for round_index in range(ROUNDS):
        for name in rotated(names, round_index):
            base, headers, sealed, pids = targets[name]
            url = f"{base}/v1/chat/completions"
            rate, cpu = throughput(url, headers, sealed, pids)
            results[name]["rps"].append(rate)
            results[name]["cpu"].append(cpu)
            if "LiteLLM" in name or name.startswith("full stack"):
                results[name]["ttft"].append(asyncio.run(_ttft(url, headers, sealed)))
        print(f"throughput round {round_index + 1}/{ROUNDS}: "
              + ", ".join(f"{n}={results[n]['rps'][-1]:.0f}" for n in names), flush=True)
    summary = {}
    for name, row in results.items():
        samples = sorted(row["samples"])
        summary[name] = {
            "p50": statistics.median(samples),
            "p99": samples[int(len(samples) * 0.99) - 1],
            "blocks": row["blocks"],
            "rps": statistics.median(row["rps"]),
            "cpu": statistics.median(row["cpu"]),
            "ttft": statistics.median(row["ttft"]) if row["ttft"] else None,
            "self_reported": statistics.median(row["overheads"]) if row["overheads"] else None,
        }
    return summary


async def _ttft(url, headers, sealed) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await time_to_first_token(session, url, headers, sealed)


def paired(results: dict[str, dict], minuend: str, subtrahend: str) -> tuple[float, float, float]:
    """Median and quartiles of the per-round differences of block medians (same round, same drift)."""
    differences = sorted(a - b for a, b in zip(results[minuend]["blocks"], results[subtrahend]["blocks"], strict=True))
    quartiles = statistics.quantiles(differences, n=4)
    return statistics.median(differences), quartiles[0], quartiles[2]


SHIPPED, TUNED = "bare LiteLLM, as shipped", "bare LiteLLM, tuned"
FULL, QUIET, WORKERS = "full stack", "full stack, tracing off", "full stack, 2 LiteLLM workers, tracing off"
ALONE, ALONE_QUIET = "wrapper -> fake provider", "wrapper -> fake provider, tracing off"
DIRECT = "stack's LiteLLM, direct"


def table(results: dict[str, dict], audit: dict[str, tuple[int, int]]) -> str:
    shipped, tuned, full, quiet = results[SHIPPED], results[TUNED], results[FULL], results[QUIET]
    lines = [
        "| target | p50 ms (c=1) | p99 ms (c=1) | req/s (c=16) | req/s vs LiteLLM as shipped | CPU ms/req (c=16) | TTFT p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        ttft = f"{row['ttft']:.2f}" if row["ttft"] is not None else "-"
        lines.append(f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['rps']:.0f} | {row['rps'] / shipped['rps']:.2f} | "
                     f"{row['cpu']:.2f} | {ttft} |")

    def pair(a: str, b: str) -> str:
        median, low, high = paired(results, a, b)
        return f"**{median:+.2f} ms** (quartiles {low:+.2f} to {high:+.2f})"

    goals = []
    for name in (FULL, QUIET):
        lower, _, _ = paired(results, name, SHIPPED)
        ratio = results[name]["rps"] / shipped["rps"]
        goals.append(f"- {name} (tuned LiteLLM) vs LiteLLM as shipped: c=1 p50 {pair(name, SHIPPED)}, paired (goal: lower: "
                     f"{'met' if lower < 0 else 'NOT met'}); req/s at c=16 **{ratio:.0%}** (goal >= 110%: "
                     f"{'met' if ratio >= 1.10 else 'NOT met'}).")
    lines += [
        "",
        "CPU ms/req: user + system time of every process of the target (LiteLLM's workers, the wrapper, the Langfuse "
        "exporter, the fake provider) and PostgreSQL's, over the c=16 runs, per answered request.",
        "",
        *goals,
        f"- What the tuning does to LiteLLM alone (tuned - as shipped, paired): {pair(TUNED, SHIPPED)} at c=1; req/s "
        f"{tuned['rps'] / shipped['rps']:.0%}; CPU per request {tuned['cpu']:.2f} vs {shipped['cpu']:.2f} ms.",
        f"- Wrapper's share over the same (tuned) LiteLLM: full stack - bare tuned, paired: {pair(FULL, TUNED)}; "
        f"tracing off: {pair(QUIET, TUNED)}; req/s {full['rps'] / tuned['rps']:.0%} and {quiet['rps'] / tuned['rps']:.0%} of bare tuned.",
        f"  - of which LiteLLM with the gateway's callbacks (stack's LiteLLM direct - bare tuned, paired): "
        f"{pair(DIRECT, TUNED)};",
        f"  - of which the wrapper hop (full - stack's LiteLLM direct, paired): {pair(FULL, DIRECT)}.",
        f"- The wrapper hop without LiteLLM's noise (wrapper -> fake - fake, paired): {pair(ALONE, 'fake provider')}; "
        f"tracing off: {pair(ALONE_QUIET, 'fake provider')}. Wrapper alone at c=16: {results[ALONE_QUIET]['rps']:.0f} req/s "
        f"untraced ({results[ALONE_QUIET]['rps'] / results['fake provider']['rps']:.0%} of the fake provider's), "
        f"{results[ALONE]['rps']:.0f} traced.",
        f"- Wrapper's self-reported time (`x-gateway-overhead-ms`, p50; the audit commit included): {full['self_reported']:.3f} ms "
        f"in the full stack, {results[ALONE]['self_reported']:.3f} ms alone in front of the fake provider.",
        f"- What tracing costs (Langfuse from LiteLLM, OpenTelemetry from the wrapper, every request traced): full stack - "
        f"tracing off, paired: {pair(FULL, QUIET)} at c=1; req/s {full['rps'] / quiet['rps']:.0%} of the untraced stack's. "
        f"The wrapper's spans alone (wrapper -> fake, traced - untraced): {pair(ALONE, ALONE_QUIET)}.",
        f"- LiteLLM workers (GATEWAY_LITELLM_WORKERS): the untraced full stack at c=16 with 1 worker {quiet['rps']:.0f} req/s, "
        f"with 2 workers {results[WORKERS]['rps']:.0f} req/s ({results[WORKERS]['rps'] / quiet['rps']:.2f}x).",
        f"- TTFT added by the full stack over LiteLLM as shipped (p50): {full['ttft'] - shipped['ttft']:+.2f} ms; over bare "
        f"tuned: {full['ttft'] - tuned['ttft']:+.2f} ms.",
        "",
        "Audit on (PostgreSQL, synchronous commit, record committed before each answer ends):",
        "",
        "| target | audit records/s (c=16) | answers 200 | records in the database |",
        "|---|---:|---:|---:|",
    ]
    for name, (answered, recorded) in audit.items():
        lines.append(f"| {name} | {results[name]['rps']:.0f} | {answered:,} | {recorded:,} |")
    return "\n".join(lines)


async def _admin(statement: str, database: str | None = None):
    dsn = ADMIN_DSN if database is None else ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


def with_langfuse_outages(url: str, headers: dict, stand_in: OtlpStubProcess) -> dict[str, float]:
    """Full-stack p50 at c=1 with Langfuse answering, hanging (exports never return) and down (nothing listens)."""
    samples: dict[str, list[float]] = {"answering": [], "hanging": [], "down": []}
    for _ in range(OUTAGE_ROUNDS):
        for mode in samples:
            if mode == "down":
                stand_in.stop()
            else:
                stand_in.set_mode("hang" if mode == "hanging" else "ok")
            block, _ = latency_block(url, headers, False)
            samples[mode].append(statistics.median(block))
            if mode == "down":
                stand_in.start()
    stand_in.set_mode("ok")
    return {mode: statistics.median(blocks) for mode, blocks in samples.items()}


def observability(otlp_url: str) -> dict[str, str]:
    return {"LANGFUSE_PUBLIC_KEY": "pk-lf-bench", "LANGFUSE_SECRET_KEY": "sk-lf-bench", "LANGFUSE_BASE_URL": otlp_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url}


def main() -> None:
    workdir = ROOT / "var" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    processes = []
    stand_in = OtlpStubProcess(workdir / "otlp.log", count_only=True)
    databases = {name: f"gw_bench_{name}_{os.getpid()}" for name in ("full", "quiet", "workers", "alone", "alone_quiet")}
    for database in databases.values():
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    database_url = {name: f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}" for name, db in databases.items()}
    try:
        fake_port = free_port()
        fake = start([str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(fake_port),
                      "--behaviours", orjson.dumps(MODELS).decode()], workdir / "fake.log")
        processes.append(fake)
        fake_url = f"http://127.0.0.1:{fake_port}"
        wait_until(f"{fake_url}/_fake/log", 20, fake, workdir / "fake.log")

        # Observability on, as in production: Langfuse traces from LiteLLM and the wrapper's OpenTelemetry
        # spans, both exported to a local OTLP stand-in; metrics and stream costs are always on.
        stand_in.start()
        otlp_url = stand_in.url
        guarded = write_litellm_config(workdir / "litellm_full.yaml", fake_url, {m: {} for m in MODELS},
                                       extra_callbacks=("custom_callbacks.langfuse_traces",))
        # Bare LiteLLM on the same model list, without the gateway's callbacks: as shipped (its own key auth, the
        # openai SDK path, one worker) and tuned as `gateway up` runs it (the master-key auth, the newer handler).
        tuned_config = workdir / "litellm_tuned.yaml"
        tuned_config.write_text("".join(line for line in guarded.read_text().splitlines(keepends=True)
                                        if not line.startswith("  callbacks:")))
        shipped_config = workdir / "litellm_shipped.yaml"
        shipped_config.write_text("".join(line for line in tuned_config.read_text().splitlines(keepends=True)
                                          if not line.startswith("  custom_auth:")))
        bare_ports = {}
        for name, config, tuning in ((SHIPPED, shipped_config, {"EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER": "false"}),
                                     (TUNED, tuned_config, litellm_tuning(Settings()))):
            bare_ports[name] = free_port()
            env = {**LITELLM_OFFLINE_ENV, "LITELLM_MASTER_KEY": MASTER_KEY, "NUM_WORKERS": "1", **tuning}
            processes.append(start([str(BIN / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                                    "--port", str(bare_ports[name])], workdir / f"bare-{len(bare_ports)}.log", env))

        gateway_config = workdir / "gateway.yaml"
        gateway_config.unlink(missing_ok=True)
        gateway_cli(gateway_config, "tenants", "add", "bench")
        wrapper_headers = {"content-type": "application/json",
                           "authorization": f"Bearer {gateway_cli(gateway_config, 'keys', 'create', '--tenant', 'bench', '--name', 'bench')}"}
        # Full stacks as `gateway up` runs them: traced; untraced (what tracing costs, in the same run); untraced
        # with two LiteLLM workers.
        stacks = {}
        for name, database, extra in ((FULL, "full", observability(otlp_url)), (QUIET, "quiet", {}),
                                      (WORKERS, "workers", {"GATEWAY_LITELLM_WORKERS": "2"})):
            port, litellm_port = free_port(), free_port()
            stack = start([str(BIN / "gateway"), "up", "--config", str(gateway_config), "--litellm-config", str(guarded)],
                          workdir / f"{database}.log",
                          {"GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(litellm_port),
                           "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY, "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
                           "GATEWAY_DATABASE_URL": database_url[database], "GATEWAY_VAR_DIR": str(workdir / f"var-{database}"),
                           **extra})
            processes.append(stack)
            stacks[name] = (port, litellm_port, stack)
        for name, port in bare_ports.items():
            wait_until(f"http://127.0.0.1:{port}/health/liveliness", 120)
        for name, (port, _, stack) in stacks.items():
            wait_until(f"http://127.0.0.1:{port}/readyz", 120, stack, workdir / "stack.log")

        # The wrapper alone, in front of the fake provider: its hop measured without LiteLLM's noise.
        # And once more with tracing off: what the wrapper's spans cost, without LiteLLM's noise.
        alone_ports, alone_pids = {}, {}
        for name, traced in (("alone", True), ("alone_quiet", False)):
            alone_env = {"GATEWAY_LITELLM_PORT": str(fake_port), "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
                         "GATEWAY_LITELLM_CONFIG": str(guarded),
                         "GATEWAY_CONFIG": str(gateway_config), "GATEWAY_DATABASE_URL": database_url[name],
                         "GATEWAY_VAR_DIR": str(workdir / f"var-{name}"), **(observability(otlp_url) if traced else {})}
            gateway_cli(gateway_config, "db", "upgrade", env=alone_env)
            alone_ports[name] = free_port()
            alone = start([str(BIN / "python"), "-m", "uvicorn", "wrapper.app:create_app", "--factory",
                           "--port", str(alone_ports[name]), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                           "--no-proxy-headers", "--log-level", "warning"], workdir / f"{name}.log", alone_env)
            processes.append(alone)
            alone_pids[name] = alone.pid
            wait_until(f"http://127.0.0.1:{alone_ports[name]}/healthz", 30, alone, workdir / f"{name}.log")

        litellm_headers = {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}"}
        bare_pids = {name: process.pid for name, process in zip(bare_ports, processes[1:3], strict=True)}
        targets = {
            "fake provider": (fake_url, {"content-type": "application/json"}, False, [fake.pid]),
            ALONE: (f"http://127.0.0.1:{alone_ports['alone']}", wrapper_headers, False, [alone_pids["alone"], fake.pid]),
            ALONE_QUIET: (f"http://127.0.0.1:{alone_ports['alone_quiet']}", wrapper_headers, False,
                          [alone_pids["alone_quiet"], fake.pid]),
            **{name: (f"http://127.0.0.1:{port}", litellm_headers, False, [*process_tree(bare_pids[name]), fake.pid])
               for name, port in bare_ports.items()},
            "stack's LiteLLM, direct": (f"http://127.0.0.1:{stacks[FULL][1]}", litellm_headers, True,
                                        [*process_tree(stacks[FULL][2].pid), fake.pid]),
            **{name: (f"http://127.0.0.1:{port}", wrapper_headers, False, [*process_tree(stack.pid), fake.pid])
               for name, (port, _, stack) in stacks.items()},
        }
        results = measure(targets)
        outage = with_langfuse_outages(f"{targets[FULL][0]}/v1/chat/completions", wrapper_headers, stand_in)
        audit = {}
        for name, database in ((ALONE, databases["alone"]), (ALONE_QUIET, databases["alone_quiet"]),
                               (FULL, databases["full"]), (QUIET, databases["quiet"]), (WORKERS, databases["workers"])):
            url = f"{targets[name][0]}/v1/chat/completions"
            recorded = asyncio.run(_admin("SELECT count(*) FROM audit_events WHERE tenant = 'bench'", database))
            audit[name] = (SENT.get(url, 0), recorded)
        time.sleep(2)  # the exporters' last batches
        spans = stand_in.counted()
    finally:
        for process in reversed(processes):
            stop(process)
        stand_in.stop()
        for database in databases.values():
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    header = (
        f"# Wrapper overhead\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Latency: {LATENCY_ROUNDS} rounds of {LATENCY_BLOCK} sequential requests per target, the targets' order rotated each round; "
        f"then {ROUNDS} rounds of {THROUGHPUT_SECONDS:.0f} s at concurrency 16 (then {COOL_DOWN_SECONDS:.0f} s of quiet) and "
        f"{TTFT_REQUESTS} streams (5 chunks) for TTFT, medians kept. Load generator: bench/loadgen.py (keep-alive, uvloop; aiohttp for streams) in one process on the same machine.\n\n"
    )
    report = (header + table(results, audit)
              + f"\n\nOpenTelemetry spans received by the OTLP stand-in (Langfuse traces and the wrapper's spans): {spans:,}.\n"
              + f"\nLangfuse (and the OTLP collector) in trouble: full-stack p50 at c=1 with the stand-in answering "
              f"{outage['answering']:.2f} ms, hanging (exports never return) {outage['hanging']:.2f} ms, down (nothing "
              f"listens) {outage['down']:.2f} ms; medians of {OUTAGE_ROUNDS} rounds of alternating blocks of {LATENCY_BLOCK}; "
              "every request answered 200 in each.\n")
    print("\n" + report)
    (ROOT / "bench" / "results" / "overhead.md").write_text(report)


if __name__ == "__main__":
    main()
