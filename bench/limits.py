"""What admission (rate limits, concurrency, budgets) adds to a request, in one run on this machine.

Two wrappers side by side in front of the fake provider (no LiteLLM, as bench/hot_path.py, so its noise does not
hide the wrapper's), audit on SQLite: one keeps limits in process, the other on Redis (127.0.0.1:6379, a database of
its own). Each serves three tenants: `off` (no limits), `typical` (the tenant's requests and tokens per minute and
concurrency: 3 counters) and `on` (every kind of limit, on the tenant, the endpoint and the key: 11 counters), all
set high enough never to refuse. So the variants are measured in the same process, alternately, and the difference
is admission alone.

Prints, per variant: the c=1 latency (p50 and p99 of blocks alternated between variants), its difference to
limits off in the same process, and CPU time per request at c=8 of the wrapper and of redis-server (/proc).
Writes bench/results/limits.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import closed_loop, cpu_of, pids_named, request_bytes  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config  # noqa: E402
from tests.support.wrapper import start_wrapper, write_tenants  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/7"
ROUNDS, BLOCK = int(os.environ.get("BENCH_ROUNDS", 24)), 300
CHAT = {"model": "bench", "max_tokens": 16, "messages": [{"role": "user", "content": "Say something short."}]}
HIGH = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "concurrency": 10**6, "usd_per_day": 10**6,
        "usd_per_month": 10**7}
TENANTS = {
    "off": {"models": ["*"]},
    "typical": {"models": ["*"], "limits": {"mode": "enforce", "requests_per_minute": 10**9,
                                            "tokens_per_minute": 10**12, "concurrency": 10**6}},
    "on": {"models": ["*"], "endpoints": {"app": {"limits": HIGH}},
           "limits": {"mode": "enforce", **HIGH, "per_key": HIGH}},
}
# With PII redaction on and a prompt of ~1 KB, admission's round trip to Redis travels while PII scans the prompt.
TENANTS |= {"pii-off": {**TENANTS["off"], "pii": {"mode": "enforce"}},
            "pii-typical": {**TENANTS["typical"], "pii": {"mode": "enforce"}}}
TICKET = ("My order arrived with the wrong size and the box was damaged in transit. I followed the return steps in "
          "the help centre, printed the label, and dropped the parcel at the depot last Tuesday, but the tracking page "
          "still shows it as not received and the refund has not appeared. Could you check what happened, tell me "
          "when the refund will be issued, and whether I can exchange the item for the next size up instead? ") * 3
PII_CHAT = {**CHAT, "messages": [{"role": "user", "content": TICKET}]}


def main() -> None:
    workdir = ROOT / "var" / "bench-limits"
    workdir.mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    processes = []
    try:
        fake_port = free_port()
        fake = start([str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(fake_port),
                      "--behaviours", orjson.dumps({"bench": {}}).decode()], workdir / "fake.log")
        processes.append(fake)
        wait_until(f"http://127.0.0.1:{fake_port}/_fake/log", 20, fake, workdir / "fake.log")
        litellm_config = write_litellm_config(workdir / "litellm.yaml", f"http://127.0.0.1:{fake_port}", {"bench": {}})
        config = workdir / "gateway.yaml"
        keys = write_tenants(config, TENANTS)
        keys["on"] = gateway_cli(config, "keys", "create", "--tenant", "on", "--name", "app-bound", "--endpoint", "app")
        wrappers = {}
        for index, (name, extra) in enumerate((("in process", {}), ("Redis", {"GATEWAY_REDIS_URL": REDIS_URL}))):
            (workdir / f"wrapper-{index}").mkdir(exist_ok=True)
            wrapper = start_wrapper(workdir / f"wrapper-{index}", {
                "GATEWAY_LITELLM_PORT": str(fake_port), "GATEWAY_INTERNAL_SECRET": "bench-secret",
                "GATEWAY_LITELLM_CONFIG": str(litellm_config), "GATEWAY_CONFIG": str(config), **extra},
                command=lambda port: [str(BIN / "python"), "-m", "uvicorn", "wrapper.app:create_app", "--factory",
                                      "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                                      "--no-access-log", "--log-level", "warning"])
            processes.append(wrapper.process)
            wrappers[name] = (int(wrapper.url.rsplit(":", 1)[1]), wrapper.process.pid)

        def request(port: int, tenant: str, chat: dict = CHAT) -> bytes:
            return request_bytes("127.0.0.1", port, "/v1/chat/completions", orjson.dumps(chat),
                                 {"content-type": "application/json", "authorization": f"Bearer {keys[tenant]}"})

        targets = {f"{name}, limits {tenant}": (port, pid, request(port, tenant))
                   for name, (port, pid) in wrappers.items() for tenant in ("off", "typical", "on")}
        port, pid = wrappers["Redis"]
        targets |= {f"Redis, PII on (1 KB prompt), limits {tenant}": (port, pid, request(port, f"pii-{tenant}", PII_CHAT))
                    for tenant in ("off", "typical")}
        p50s, p99s, own = alternated(targets, ROUNDS)
        pinned = pinned_rounds({name: targets[name] for name in ("Redis, limits off", "Redis, limits typical",
                                                                 "Redis, limits on")})
        cpu = {}
        for name, (port, pid, body) in targets.items():
            redis_pids = pids_named("redis-server")
            before = (cpu_of([pid]), cpu_of(redis_pids))
            run = closed_loop("127.0.0.1", port, body, 8, seconds=5)
            after = (cpu_of([pid]), cpu_of(redis_pids))
            assert run.non_200() == 0, (name, run.statuses)
            cpu[name] = ((after[0] - before[0]) / run.count * 1e6, (after[1] - before[1]) / run.count * 1e6, run.rate)
    finally:
        for process in reversed(processes):
            stop(process)
    report = render(p50s, p99s, own, cpu, pinned)
    print("\n" + report)
    (ROOT / "bench" / "results" / "limits.md").write_text(report)


def alternated(targets: dict, rounds: int) -> tuple[dict, dict, dict]:
    """Blocks of BLOCK requests at c=1, alternated between the targets, their order rotated each round so every
    target sees the same drift: per target, each block's p50, p99 and the wrapper's own time (its median)."""
    p50s, p99s, own = {t: [] for t in targets}, {t: [] for t in targets}, {t: [] for t in targets}
    names = list(targets)
    for round_index in range(rounds):
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            port, _, body = targets[name]
            closed_loop("127.0.0.1", port, body, 1, total=20)
            run = closed_loop("127.0.0.1", port, body, 1, total=BLOCK, keep_headers=BLOCK)
            assert run.non_200() == 0, (name, run.statuses)
            p50s[name].append(run.p50)
            p99s[name].append(run.p99)
            own[name].append(statistics.median(float(h[b"x-gateway-overhead-ms"]) for h in run.header_samples))
    return p50s, p99s, own


def pinned_rounds(targets: dict) -> tuple[dict, dict, dict] | None:
    """The same blocks with redis-server on CPU 1 and the wrapper on CPU 0 (taskset), as Redis has a CPU of its own
    in a deployment. Unpinned on two cores, a socket write wakes Redis on the writer's core (the kernel's wake-up
    affinity), so Redis and the steps that run while its answer travels take turns instead of overlapping. Seen
    with `perf sched timehist` at c=1 (2026-12-04): Redis, woken on the wrapper's vCPU while the other one idled,
    waited ~140 µs for the wrapper to block on its answer, then ran ~120 µs (its script is ~40 µs of that)."""
    if len(os.sched_getaffinity(0)) < 2:
        return None
    wrapper_pid = next(iter(targets.values()))[1]
    redis_pids = pids_named("redis-server")
    everywhere = f"{sum(1 << cpu for cpu in os.sched_getaffinity(0)):x}"
    try:
        for pid, mask in [(pid, "2") for pid in redis_pids] + [(wrapper_pid, "1")]:
            subprocess.run(["taskset", "-a", "-p", mask, str(pid)], check=True, capture_output=True)
        return alternated(targets, max(4, ROUNDS // 2))
    finally:
        for pid in [*redis_pids, wrapper_pid]:
            subprocess.run(["taskset", "-a", "-p", everywhere, str(pid)], capture_output=True)


def _added(values: dict, name: str) -> float:
    base = name.rsplit(",", 1)[0] + ", limits off"
    return statistics.median(a - b for a, b in zip(values[name], values[base], strict=True))


def render(p50s: dict, p99s: dict, own: dict, cpu: dict, pinned: tuple[dict, dict, dict] | None) -> str:
    lines = [f"# Admission's cost per request ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {ROUNDS} alternated blocks of "
             f"{BLOCK} requests at c=1)", "",
             "Wrapper alone in front of the fake provider, audit on SQLite. `typical`: 3 counters per request (the "
             "tenant's requests and tokens per minute, concurrency); `on`: 11 (requests, tokens, concurrency, USD per "
             "day and month on the tenant, the endpoint and the key). Tokens and money reserved, then settled with the "
             "tenant's next admission (or alone within 2 ms). The last two rows have PII redaction on and a 1,239-"
             "character prompt: admission's query to Redis is sent first and answered while PII scans.", "",
             "| variant | p50 ms | p50 added vs off | p99 ms | p99 added vs off | wrapper's own time added (p50) | "
             "wrapper CPU µs/req (c=8) | redis-server CPU µs/req | req/s c=8 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in p50s:
        wrapper_cpu, redis_cpu, rate = cpu[name]
        lines.append(f"| {name} | {statistics.median(p50s[name]):.3f} | {_added(p50s, name):+.3f} | "
                     f"{statistics.median(p99s[name]):.3f} | {_added(p99s, name):+.3f} | {_added(own, name):+.3f} | "
                     f"{wrapper_cpu:.0f} | {redis_cpu:.0f} | {rate:.0f} |")
    lines += ["", "Added latency is the median over blocks of (this variant's block p50 or p99 minus limits off's in "
              "the same round, same process). The wrapper's own time is its `x-gateway-overhead-ms` (the request's "
              "time in the wrapper, the wait on the provider left out), its added p50 taken the same way: the rest "
              "of the added latency is outside the request's own handling (the two cores shared by the client, the "
              "wrapper, Redis and the fake provider). Goal (issue 17): at most +0.3 ms p50 and +1 ms p99 with Redis."]
    if pinned is not None:
        p50s, p99s, own = pinned
        lines += ["", f"Redis on a CPU of its own (redis-server on CPU 1, the wrapper on CPU 0; {len(next(iter(p50s.values())))}"
                  " more alternated blocks): what overlapping admission's round trip with the request's other work "
                  "saves when Redis really runs beside the wrapper.", "",
                  "| variant | p50 ms | p50 added vs off | p99 added vs off | wrapper's own time added (p50) |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {statistics.median(p50s[name]):.3f} | {_added(p50s, name):+.3f} | "
                  f"{_added(p99s, name):+.3f} | {_added(own, name):+.3f} |" for name in p50s]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
