"""Overhead of the wrapper over bare LiteLLM, measured in one run on this machine.

Targets on loopback, all answered by the fake provider:
  (a) the fake provider directly, (b) bare LiteLLM on the same model list,
  (c) the full stack (`gateway up`: wrapper + LiteLLM with the gateway's callbacks),
  and the wrapper alone in front of the fake provider.
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
stack with tracing off shows what tracing itself costs.
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
from custom_callbacks.seal import sealed_metadata  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.otlp_stub import OtlpStubProcess  # noqa: E402
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config  # noqa: E402
from wrapper.cli.up import LITELLM_OFFLINE_ENV  # noqa: E402

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


async def latency_block(session, url, headers, sealed) -> tuple[list[float], list[float]]:
    """One block of sequential requests: latencies (ms) and the wrapper's self-reported times."""
    body = body_for(CHAT, sealed)
    for _ in range(LATENCY_WARMUP):
        await timed_post(session, url, headers, body)
    samples, overheads = [], []
    for _ in range(LATENCY_BLOCK):
        seconds, reply_headers = await timed_post(session, url, headers, body)
        samples.append(seconds * 1000)
        if "x-gateway-overhead-ms" in reply_headers:
            overheads.append(float(reply_headers["x-gateway-overhead-ms"]))
    return samples, overheads


async def throughput(session, url, headers, sealed, concurrency=16) -> float:
    body = body_for(CHAT, sealed)
    done = 0
    deadline = time.perf_counter() + THROUGHPUT_SECONDS

    async def worker():
        nonlocal done
        while time.perf_counter() < deadline:
            await timed_post(session, url, headers, body)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    # LiteLLM finishes logging a burst in background tasks after answering it: let that work end
    # before the next target is measured, or the next target pays for it.
    await asyncio.sleep(COOL_DOWN_SECONDS)
    return rate


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


async def measure(targets: dict[str, tuple[str, dict, bool]]) -> dict[str, dict]:
    """Latency, throughput and TTFT as separate phases, each alternating between the targets."""
    names = list(targets)
    results: dict[str, dict] = {name: {"blocks": [], "samples": [], "overheads": [], "rps": [], "ttft": []} for name in names}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        # Latency at c=1 drifts by milliseconds over seconds here (a shared VM): short blocks,
        # alternated, so that every target sees the same drift and differences can be paired by round.
        for round_index in range(LATENCY_ROUNDS):
            for name in rotated(names, round_index):
                base, headers, sealed = targets[name]
                samples, overheads = await latency_block(session, f"{base}/v1/chat/completions", headers, sealed)
                results[name]["blocks"].append(statistics.median(samples))
                results[name]["samples"] += samples
                results[name]["overheads"] += overheads
            print(f"latency round {round_index + 1}/{LATENCY_ROUNDS}: "
                  + ", ".join(f"{n}={results[n]['blocks'][-1]:.2f}" for n in names), flush=True)
        for round_index in range(ROUNDS):
            for name in rotated(names, round_index):
                base, headers, sealed = targets[name]
                url = f"{base}/v1/chat/completions"
                results[name]["rps"].append(await throughput(session, url, headers, sealed))
                if "LiteLLM" in name or name.startswith("full stack"):
                    results[name]["ttft"].append(await time_to_first_token(session, url, headers, sealed))
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
            "ttft": statistics.median(row["ttft"]) if row["ttft"] else None,
            "self_reported": statistics.median(row["overheads"]) if row["overheads"] else None,
        }
    return summary


def paired(results: dict[str, dict], minuend: str, subtrahend: str) -> tuple[float, float, float]:
    """Median and quartiles of the per-round differences of block medians (same round, same drift)."""
    differences = sorted(a - b for a, b in zip(results[minuend]["blocks"], results[subtrahend]["blocks"], strict=True))
    quartiles = statistics.quantiles(differences, n=4)
    return statistics.median(differences), quartiles[0], quartiles[2]


def table(results: dict[str, dict], audit: dict[str, tuple[int, int]]) -> str:
    bare, full = results["bare LiteLLM"], results["full stack"]
    lines = [
        "| target | p50 ms (c=1) | p99 ms (c=1) | req/s (c=16) | req/s vs bare | TTFT p50 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        ttft = f"{row['ttft']:.2f}" if row["ttft"] is not None else "-"
        lines.append(f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['rps']:.0f} | {row['rps'] / bare['rps']:.2f} | {ttft} |")
    share, share_low, share_high = paired(results, "full stack", "bare LiteLLM")
    callback, _, _ = paired(results, "stack's LiteLLM, direct", "bare LiteLLM")
    stack_hop, _, _ = paired(results, "full stack", "stack's LiteLLM, direct")
    hop, hop_low, hop_high = paired(results, "wrapper -> fake provider", "fake provider")
    quiet = results["full stack, tracing off"]
    traced, traced_low, traced_high = paired(results, "full stack", "full stack, tracing off")
    quiet_share, _, _ = paired(results, "full stack, tracing off", "bare LiteLLM")
    spans, spans_low, spans_high = paired(results, "wrapper -> fake provider", "wrapper -> fake provider, tracing off")
    ratio = full["rps"] / bare["rps"]
    lines += [
        "",
        f"- Wrapper's share at c=1 (full stack - bare LiteLLM, median of the {LATENCY_ROUNDS} rounds' paired differences "
        f"of block p50s): **{share:.2f} ms** (quartiles {share_low:.2f} to {share_high:.2f}; "
        f"goal <= 1.0 ms: {'met' if share <= 1.0 else 'NOT met'}). Difference of the pooled p50s: {full['p50'] - bare['p50']:.2f} ms.",
        f"  - of which LiteLLM with the gateway's callback (stack's LiteLLM direct - bare, paired): {callback:.2f} ms;",
        f"  - of which the wrapper hop (full - stack's LiteLLM direct, paired): {stack_hop:.2f} ms.",
        f"- The wrapper hop without LiteLLM's noise (wrapper -> fake - fake, paired): **{hop:.2f} ms** (quartiles {hop_low:.2f} to {hop_high:.2f}).",
        f"- Wrapper's self-reported time (`x-gateway-overhead-ms`, p50; the audit commit included): {full['self_reported']:.3f} ms "
        f"in the full stack, {results['wrapper -> fake provider']['self_reported']:.3f} ms alone in front of the fake provider.",
        f"- Full-stack req/s vs bare LiteLLM at c=16: **{ratio:.0%}** (goal >= 85%: {'met' if ratio >= 0.85 else 'NOT met'}).",
        f"- What tracing costs (Langfuse from LiteLLM, OpenTelemetry from the wrapper, every request traced): "
        f"full stack - the same stack with tracing off, paired: **{traced:.2f} ms** at c=1 (quartiles {traced_low:.2f} to "
        f"{traced_high:.2f}); req/s {full['rps'] / quiet['rps']:.0%} of the untraced stack's. The untraced stack's share "
        f"(- bare LiteLLM, paired): {quiet_share:.2f} ms, req/s {quiet['rps'] / bare['rps']:.0%} of bare.",
        f"  - The wrapper's spans alone (wrapper -> fake, traced - untraced, paired): **{spans:.2f} ms** (quartiles "
        f"{spans_low:.2f} to {spans_high:.2f}); self-reported {results['wrapper -> fake provider']['self_reported']:.3f} "
        f"vs {results['wrapper -> fake provider, tracing off']['self_reported']:.3f} ms.",
        f"- TTFT added by the wrapper (p50): {full['ttft'] - bare['ttft']:.2f} ms.",
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


async def with_langfuse_outages(url: str, headers: dict, stand_in: OtlpStubProcess) -> dict[str, float]:
    """Full-stack p50 at c=1 with Langfuse answering, hanging (exports never return) and down (nothing listens)."""
    samples: dict[str, list[float]] = {"answering": [], "hanging": [], "down": []}
    async with aiohttp.ClientSession() as session:
        for _ in range(OUTAGE_ROUNDS):
            for mode in samples:
                if mode == "down":
                    stand_in.stop()
                else:
                    stand_in.set_mode("hang" if mode == "hanging" else "ok")
                block, _ = await latency_block(session, url, headers, False)
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
    databases = {name: f"gw_bench_{name}_{os.getpid()}" for name in ("full", "quiet", "alone", "alone_quiet")}
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
        bare_config = workdir / "litellm_bare.yaml"
        bare_config.write_text("".join(line for line in guarded.read_text().splitlines(keepends=True)
                                       if not line.startswith("  callbacks:")))

        bare_port = free_port()
        env = {**LITELLM_OFFLINE_ENV, "LITELLM_MASTER_KEY": MASTER_KEY}
        bare = start([str(BIN / "litellm"), "--config", str(bare_config), "--host", "127.0.0.1", "--port", str(bare_port)],
                     workdir / "bare.log", env)
        processes.append(bare)

        gateway_config = workdir / "gateway.yaml"
        gateway_config.unlink(missing_ok=True)
        gateway_cli(gateway_config, "tenants", "add", "bench")
        wrapper_headers = {"content-type": "application/json",
                           "authorization": f"Bearer {gateway_cli(gateway_config, 'keys', 'create', '--tenant', 'bench', '--name', 'bench')}"}
        port, stack_litellm_port = free_port(), free_port()
        full = start([str(BIN / "gateway"), "up", "--config", str(gateway_config), "--litellm-config", str(guarded)], workdir / "full.log",
                     {"GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(stack_litellm_port),
                      "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY, "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
                      "GATEWAY_DATABASE_URL": database_url["full"], "GATEWAY_VAR_DIR": str(workdir / "var"),
                      **observability(otlp_url)})
        processes.append(full)
        # The same stack without Langfuse and OpenTelemetry (metrics and costs stay on: they are always on),
        # so that what tracing costs is measured in the same run.
        quiet_port = free_port()
        quiet = start([str(BIN / "gateway"), "up", "--config", str(gateway_config), "--litellm-config", str(guarded)],
                      workdir / "quiet.log",
                      {"GATEWAY_PORT": str(quiet_port), "GATEWAY_LITELLM_PORT": str(free_port()),
                       "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY, "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
                       "GATEWAY_DATABASE_URL": database_url["quiet"], "GATEWAY_VAR_DIR": str(workdir / "var-quiet")})
        processes.append(quiet)
        wait_until(f"http://127.0.0.1:{bare_port}/health/liveliness", 120, bare, workdir / "bare.log")
        wait_until(f"http://127.0.0.1:{port}/readyz", 120, full, workdir / "full.log")
        wait_until(f"http://127.0.0.1:{quiet_port}/readyz", 120, quiet, workdir / "quiet.log")

        # The wrapper alone, in front of the fake provider: its hop measured without LiteLLM's noise.
        # And once more with tracing off: what the wrapper's spans cost, without LiteLLM's noise.
        alone_ports = {}
        for name, traced in (("alone", True), ("alone_quiet", False)):
            alone_env = {"GATEWAY_LITELLM_PORT": str(fake_port), "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET,
                         "GATEWAY_LITELLM_CONFIG": str(guarded),
                         "GATEWAY_CONFIG": str(gateway_config), "GATEWAY_DATABASE_URL": database_url[name],
                         "GATEWAY_VAR_DIR": str(workdir / f"var-{name}"), **(observability(otlp_url) if traced else {})}
            gateway_cli(gateway_config, "db", "upgrade", env=alone_env)
            alone_ports[name] = free_port()
            alone = start([str(BIN / "python"), "-m", "uvicorn", "wrapper.app:create_app", "--factory",
                           "--port", str(alone_ports[name]), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                           "--log-level", "warning"], workdir / f"{name}.log", alone_env)
            processes.append(alone)
            wait_until(f"http://127.0.0.1:{alone_ports[name]}/healthz", 30, alone, workdir / f"{name}.log")

        litellm_headers = {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}"}
        targets = {
            "fake provider": (fake_url, {"content-type": "application/json"}, False),
            "wrapper -> fake provider": (f"http://127.0.0.1:{alone_ports['alone']}", wrapper_headers, False),
            "wrapper -> fake provider, tracing off": (f"http://127.0.0.1:{alone_ports['alone_quiet']}", wrapper_headers, False),
            "bare LiteLLM": (f"http://127.0.0.1:{bare_port}", litellm_headers, False),
            "stack's LiteLLM, direct": (f"http://127.0.0.1:{stack_litellm_port}", litellm_headers, True),
            "full stack": (f"http://127.0.0.1:{port}", wrapper_headers, False),
            "full stack, tracing off": (f"http://127.0.0.1:{quiet_port}", wrapper_headers, False),
        }
        results = asyncio.run(measure(targets))
        outage = asyncio.run(with_langfuse_outages(f"{targets['full stack'][0]}/v1/chat/completions", wrapper_headers, stand_in))
        audit = {}
        for name, database in (("wrapper -> fake provider", databases["alone"]),
                               ("wrapper -> fake provider, tracing off", databases["alone_quiet"]),
                               ("full stack", databases["full"]), ("full stack, tracing off", databases["quiet"])):
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
        f"{TTFT_REQUESTS} streams (5 chunks) for TTFT, medians kept. Load generator: aiohttp in one process on the same machine.\n\n"
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
