"""Where the wrapper's CPU goes: py-spy samples of the wrapper alone at concurrency 8, grouped by concern.

The wrapper runs in front of the fake provider with its audit log on PostgreSQL and tracing off, as in
bench/hot_path.py's reference row. py-spy is not a dependency of the project: install it anywhere
(`python3 -m venv /tmp/spy && /tmp/spy/bin/pip install py-spy`) and name it in PY_SPY (default: `py-spy`
on PATH). Writes bench/results/profile.md: the share of samples by concern (inclusive: a frame's callees
count with it) and the hottest frames by their own time.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import closed_loop, cpu_of, request_bytes  # noqa: E402
from tests.support.audit_db import as_superuser  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config  # noqa: E402
from tests.support.wrapper import write_tenants  # noqa: E402

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = int(os.environ.get("BENCH_PROFILE_SECONDS", 15))
# Concerns, by a frame that marks them (the first that matches a sample's stack counts it).
CONCERNS = [
    ("audit writer: batch, chain rows, PostgreSQL round trip", "AuditWriter._run"),
    ("the call to LiteLLM (wrapper.upstream.http1)", "LiteLLMClient."),
    ("audit record: built, observed by metrics, queued", "_Exchange.record"),
    ("body: read, parsed, checked", "read_request"),
    ("authentication and the config in force", "admit_caller"),
    ("pipeline steps (PII off, route)", "Pipeline.run"),
    ("sealed body for LiteLLM", "sealed_body"),
    ("answer sent (through the audit and id layers)", "Response.__call__"),
    ("the rest of the model call (forward, reply noted)", "model_call"),
    ("ASGI layers: request id, audit, model routes", "RequestIdMiddleware.__call__"),
    ("uvicorn: HTTP parsing and writing", "httptools_impl"),
    ("asyncpg protocol (replies)", "asyncpg"),
    ("the event loop itself (uvloop, callbacks)", "Runner.run"),
]



def main() -> None:
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not spy:
        raise SystemExit("py-spy not found: set PY_SPY (see this file's docstring)")
    workdir = ROOT / "var" / "bench-profile"
    workdir.mkdir(parents=True, exist_ok=True)
    database = f"gw_profile_{os.getpid()}"
    as_superuser(f'CREATE DATABASE "{database}"', ADMIN_DSN)
    processes = []
    try:
        fake_port = free_port()
        fake = start([str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(fake_port),
                      "--behaviours", '{"bench": {}}'], workdir / "fake.log")
        processes.append(fake)
        wait_until(f"http://127.0.0.1:{fake_port}/_fake/log", 20, fake)
        litellm_config = write_litellm_config(workdir / "litellm.yaml", f"http://127.0.0.1:{fake_port}", {"bench": {}})
        config = workdir / "gateway.yaml"
        key = write_tenants(config, {"bench": {"models": ["*"]}})["bench"]
        env = {"GATEWAY_LITELLM_PORT": str(fake_port), "GATEWAY_INTERNAL_SECRET": "profile",
               "GATEWAY_LITELLM_CONFIG": str(litellm_config), "GATEWAY_CONFIG": str(config),
               "GATEWAY_VAR_DIR": str(workdir / "var"),
               "GATEWAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"}
        gateway_cli(config, "db", "upgrade", env=env)
        port = free_port()
        wrapper = start([str(BIN / "python"), "-m", "uvicorn", "wrapper.app:create_app", "--factory", "--port", str(port),
                         "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-proxy-headers",
                         "--log-level", "warning"], workdir / "wrapper.log", env)
        processes.append(wrapper)
        wait_until(f"http://127.0.0.1:{port}/healthz", 60, wrapper)
        request = request_bytes("127.0.0.1", port, "/v1/chat/completions",
                                orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say something short."}]}),
                                {"content-type": "application/json", "authorization": f"Bearer {key}"})
        closed_loop("127.0.0.1", port, request, 8, total=2000)  # warm
        samples = Path(tempfile.mkdtemp()) / "samples.txt"
        sampler = subprocess.Popen([spy, "record", "--nonblocking", "-r", "250", "-d", str(SECONDS), "-f", "raw",
                                    "-o", str(samples), "-p", str(wrapper.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        before = cpu_of([wrapper.pid])
        run = closed_loop("127.0.0.1", port, request, 8, seconds=SECONDS - 3)
        cpu_per_request = (cpu_of([wrapper.pid]) - before) / run.count * 1e6
        sampler.wait()
    finally:
        for process in reversed(processes):
            stop(process)
        as_superuser(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', ADMIN_DSN)
    report = render(samples.read_text().splitlines(), cpu_per_request, run.rate)
    print(report)
    (ROOT / "bench" / "results" / "profile.md").write_text(report)


def render(lines: list[str], cpu_per_request: float, rate: float) -> str:
    total, by_concern, own = 0, collections.Counter(), collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        count = int(count)
        total += count
        concern = next((name for name, mark in CONCERNS if mark in stack), "other")
        by_concern[concern] += count
        frame = stack.rsplit(";", 1)[-1]
        own[re.sub(r"/.*/(site-packages|python3\.11)/", "", frame)] += count
    out = [f"# Where the wrapper's CPU goes\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. The wrapper alone in front of "
           f"the fake provider, audit on PostgreSQL, tracing off, concurrency 8: {rate:.0f} req/s, "
           f"{cpu_per_request:.0f} µs of CPU per request; {total:,} py-spy samples at 250 Hz (CPU only, not idle).\n",
           "| concern (the first marker frame in a sample's stack) | share | ≈ µs/request |", "|---|---:|---:|"]
    for name, _ in [*CONCERNS, ("other", "")]:
        share = by_concern[name] / total
        out.append(f"| {name} | {share:.0%} | {share * cpu_per_request:.0f} |")
    out += ["", "The hottest frames by their own time (system calls count where they are made):", "",
            "| frame | share |", "|---|---:|"]
    out += [f"| `{frame[:110]}` | {count / total:.1%} |" for frame, count in own.most_common(15)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
