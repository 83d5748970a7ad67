"""Admission at full scale, as issue 17 asks to see it: two wrapper replicas on one Redis, 64 clients, real windows.

The stack: the fake provider, `gateway up` (wrapper and LiteLLM) and a second wrapper in front of the same LiteLLM,
sharing gateway.yaml, Redis (database 8, emptied first) and the audit log on PostgreSQL (a database of its own).
Tenant `proof`, one endpoint per check, clients alternating between the replicas:

1. requests: 64 clients against 100 a minute for PROOF_RPM_SECONDS (default 185: three full windows). Admission
   times come from the audit records (`at`, Redis' clock): the most admitted in any 60 s window, and the fewest in
   each full minute of the run. A refused client waits 0.2 s and asks again. Retry-After against the time the next
   request was actually admitted (the refusal's time plus its Retry-After, minus the next admission: both from the
   records, on Redis' clock; positive: the client is told to wait longer than it needed, by the rounding up).
2. shadow: the same load on an endpoint whose limit is in shadow mode: every answer a 200; the refusals recorded
   are the ones enforce makes, checked by replaying the sliding window over the recorded attempts; the counters
   (gateway_limit_decisions_total of both replicas) agree with the records.
3. tokens: 64 clients streaming (one in four hangs up after the first chunk) against 3,000 tokens a minute; the
   tokens each request settled to, counted from its admission, summed over every 60 s window.

4. concurrency: 8 slots, streams of ~2 s, 32 clients that hang up after the first chunk, 1,000 times, first
   waiting as Retry-After says between refusals (as the openai SDK does), then retrying every 20 ms; each time the
   leases left in Redis, and the most streams the provider had open at once.
5. budget: $1.00 a day, 64 concurrent requests of $0.049 (reserved at $0.0491), until every client is refused;
   the settled spend from the cost ledger and from Redis' counter.

Writes bench/results/limits_proof.md.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.audit_db import as_superuser, query  # noqa: E402
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.processes import (BIN, ROOT, free_port, start, start_fake_provider, stop, wait_until,
                                     write_litellm_config)  # noqa: E402
from tests.support.wrapper import start_wrapper  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/8"
RPM_SECONDS = float(os.environ.get("PROOF_RPM_SECONDS", 185))
SHADOW_SECONDS = float(os.environ.get("PROOF_SHADOW_SECONDS", 65))
TPM_SECONDS = float(os.environ.get("PROOF_TPM_SECONDS", 75))
DISCONNECTS = int(os.environ.get("PROOF_DISCONNECTS", 1000))
CLIENTS = 64
WINDOW_MS = 60_000
RPM, TPM, SLOTS, BUDGET = 100, 3000, 8, 1.00
PRICES = {"input_cost_per_token": 0.0001, "output_cost_per_token": 0.0002}
FAKE = {"chat": {}, "stream": {"chunks": 8, "chunk_interval_ms": 20, "prompt_tokens": 12, "completion_tokens": 40},
        "long": {"chunks": 200, "chunk_interval_ms": 10}, "dear": {"prompt_tokens": 10, "completion_tokens": 240}}
ENDPOINTS = {"rpm": {"mode": "enforce", "requests_per_minute": RPM},
             "rpm-shadow": {"mode": "shadow", "requests_per_minute": RPM},
             "tpm": {"mode": "enforce", "tokens_per_minute": TPM},
             "slots": {"mode": "enforce", "concurrency": SLOTS},
             "budget": {"mode": "enforce", "usd_per_day": BUDGET}}
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Call:
    sent: float
    done: float
    status: int
    retry_after: int | None
    request_id: str


class Gateway:
    def __init__(self, urls: list[str], keys: dict[str, str], database_url: str) -> None:
        self.urls, self.keys, self.database_url = urls, keys, database_url
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        self.clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in urls]

    def client(self, worker: int) -> httpx.AsyncClient:
        return self.clients[worker % len(self.clients)]

    def headers(self, endpoint: str, request_id: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[endpoint]}", "x-request-id": request_id}

    async def chat(self, worker: int, endpoint: str, body: dict) -> Call:
        request_id, sent = uuid.uuid4().hex, time.monotonic()
        try:
            reply = await self.client(worker).post("/v1/chat/completions", json=body,
                                                   headers=self.headers(endpoint, request_id))
        except httpx.TransportError:  # a keep-alive connection the server closed as it was reused: counted, not fatal
            return Call(sent, time.monotonic(), 0, None, request_id)
        retry = reply.headers.get("retry-after")
        return Call(sent, time.monotonic(), reply.status_code, int(retry) if retry else None, request_id)

    async def hang_up_after_first_chunk(self, worker: int, endpoint: str, body: dict) -> Call:
        request_id, sent = uuid.uuid4().hex, time.monotonic()
        try:
            async with self.client(worker).stream("POST", "/v1/chat/completions", json=body,
                                                  headers=self.headers(endpoint, request_id)) as reply:
                if reply.status_code == 200:
                    async for line in reply.aiter_lines():
                        if line.startswith("data:"):
                            break  # leaving the block closes the connection mid-stream
                else:
                    await reply.aread()
        except httpx.TransportError:
            return Call(sent, time.monotonic(), 0, None, request_id)
        retry = reply.headers.get("retry-after")
        return Call(sent, time.monotonic(), reply.status_code, int(retry) if retry else None, request_id)

    def decisions(self, endpoint: str) -> list[dict]:
        """Each request's admit decision on an endpoint, with its settled tokens and cost (from its record)."""
        rows = query(self.database_url, "SELECT record FROM audit_events WHERE tenant = 'proof' AND endpoint = $1",
                     endpoint)
        found = []
        for row in rows:
            record = json.loads(row["record"])
            admit = next((d for d in record.get("decisions") or () if d["step"] == "admit"), None)
            if admit is not None:
                found.append({**admit, "status": record["status"], "tokens_in": record.get("tokens_in"),
                              "tokens_out": record.get("tokens_out"), "cost": record.get("cost")})
        return found

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


async def load(seconds: float, clients: int, call) -> list[Call]:
    """`clients` workers calling `call(worker)` until the time is up; a refused one waits 0.2 s (and a little)."""
    deadline, calls = time.monotonic() + seconds, []

    async def worker(index: int) -> None:
        rng = random.Random(index)
        while time.monotonic() < deadline:
            result = await call(index)
            calls.append(result)
            if result.status in (0, 429):
                await asyncio.sleep(0.2 + rng.random() * 0.05)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return calls


def most_in_any_window(stamps: list[int], weights: list[int] | None = None) -> int:
    """The largest sum over (t - 60 s, t] for t any stamp: as the admission script counts."""
    order = sorted(range(len(stamps)), key=lambda i: stamps[i])
    times = [stamps[i] for i in order]
    amounts = [weights[i] if weights else 1 for i in order]
    most = current = start = 0
    for end, t in enumerate(times):
        current += amounts[end]
        while times[start] <= t - WINDOW_MS:
            current -= amounts[start]
            start += 1
        if end + 1 == len(times) or times[end + 1] != t:  # the whole of one millisecond counted
            most = max(most, current)
    return most


def full_minutes(stamps: list[int]) -> list[int]:
    """Admissions in each whole minute from the first one."""
    first, last = min(stamps), max(stamps)
    return [sum(first + k * WINDOW_MS <= s < first + (k + 1) * WINDOW_MS for s in stamps)
            for k in range((last - first) // WINDOW_MS)]


def replayed_refusals(attempts: list[dict], limit: int) -> tuple[int, int]:
    """(refusals enforce would make, mismatches): the sliding window replayed over the attempts in Redis' order.
    Within one millisecond the order is unknown, so the count admitted of each millisecond is compared."""
    by_ms: dict[int, list[dict]] = {}
    for attempt in attempts:
        by_ms.setdefault(attempt["at"], []).append(attempt)
    admitted: list[int] = []
    refusals = mismatches = 0
    for at in sorted(by_ms):
        inside = len(admitted) - bisect.bisect_right(admitted, at - WINDOW_MS)
        fit = max(0, min(limit - inside, len(by_ms[at])))
        recorded = sum(a["decision"] == "admit" for a in by_ms[at])
        mismatches += recorded != fit
        refusals += len(by_ms[at]) - fit
        admitted += [at] * fit
    return refusals, mismatches


def retry_after_errors(decided: list[dict]) -> list[float]:
    """For each refusal with a Retry-After: (its time + Retry-After) - the next admission, in seconds, both on
    Redis' clock (the records' `at`)."""
    admitted = sorted(d["at"] for d in decided if d["decision"] == "admit")
    errors = []
    for refusal in (d for d in decided if d["decision"] == "refuse" and "retry_after" in d):
        index = bisect.bisect_right(admitted, refusal["at"])
        if index < len(admitted):
            errors.append((refusal["at"] + refusal["retry_after"] * 1000 - admitted[index]) / 1000)
    return errors


def scrape_refusals(urls: list[str], endpoint: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
            for s in family.samples:
                if s.name == "gateway_limit_decisions_total" and s.labels.get("endpoint") == endpoint and \
                        s.labels.get("decision") == "refuse":
                    total += s.value
    return total


async def prove(gateway: Gateway, fake_url: str) -> list[tuple[str, str, str, bool]]:
    rows = []
    for name, phase in PHASES.items():
        if name in os.environ.get("PROOF_PHASES", ",".join(PHASES)).split(","):
            rows += await phase(gateway, fake_url)
    return rows


async def requests_phase(gateway: Gateway, fake_url: str) -> list[tuple[str, str, str, bool]]:
    rows = []
    calls = await load(RPM_SECONDS, CLIENTS, lambda w: gateway.chat(w, "rpm", {"model": "chat", "messages": HI}))
    await asyncio.sleep(2)
    decided = gateway.decisions("rpm")
    stamps = [d["at"] for d in decided if d["decision"] == "admit"]
    most, minutes = most_in_any_window(stamps), full_minutes(stamps)
    errors = retry_after_errors(decided)
    within = sum(abs(e) <= 1.0 for e in errors)
    refused_latency = statistics.median([c.done - c.sent for c in calls if c.status == 429] or [0])
    rows += [
        ("requests: most admitted in any 60 s window (2 replicas, 64 clients)", f"≤ {RPM}",
         f"{most} ({len(calls)} calls, {len(stamps)} admitted over {RPM_SECONDS:.0f} s)", most <= RPM),
        ("requests: admitted in each full minute while demand exceeds the limit", f"≥ {RPM - 1}",
         ", ".join(map(str, minutes)), bool(minutes) and min(minutes) >= RPM - 1),
        ("requests: Retry-After vs the next actual admission", "within 1 s",
         f"{within} of {len(errors)} within 1 s" + (f"; error median {statistics.median(errors):+.2f} s, range "
                                                   f"{min(errors):+.2f} .. {max(errors):+.2f} s" if errors else ""),
         within == len(errors) and bool(errors)),
        ("requests: answers other than 200 or 429", "0", f"{sum(c.status not in (0, 200, 429) for c in calls)} "
         f"(a refusal answered in {refused_latency * 1000:.0f} ms, median; connections reset while reused: "
         f"{sum(c.status == 0 for c in calls)})", all(c.status in (0, 200, 429) for c in calls)),
    ]

    return rows


async def shadow_phase(gateway: Gateway, fake_url: str) -> list[tuple[str, str, str, bool]]:
    rows = []
    calls = await load(SHADOW_SECONDS, CLIENTS,
                       lambda w: gateway.chat(w, "rpm-shadow", {"model": "chat", "messages": HI}))
    await asyncio.sleep(2)
    decided = gateway.decisions("rpm-shadow")
    would, mismatches = replayed_refusals(decided, RPM)
    recorded = sum(d["decision"] == "refuse" for d in decided)
    counted = scrape_refusals(gateway.urls, "rpm-shadow")
    rows += [
        ("shadow: requests refused (429)", "0", f"{sum(c.status == 429 for c in calls)} of {len(calls)}; other "
         f"answers: {dict(Counter(c.status for c in calls if c.status != 200)) or 'none'}",
         all(c.status != 429 for c in calls)),
        ("shadow: refusals recorded vs enforce's, replayed over the same attempts", "equal, 0 mismatches",
         f"{recorded} recorded, {would} replayed, {mismatches} mismatched milliseconds",
         recorded == would and mismatches == 0),
        ("shadow: refusals counted by the replicas' metrics", "= recorded", f"{counted:.0f}", counted == recorded),
    ]

    return rows


async def tokens_phase(gateway: Gateway, fake_url: str) -> list[tuple[str, str, str, bool]]:
    rows = []

    async def stream(worker: int) -> Call:
        body = {"model": "stream", "stream": True, "max_tokens": 60, "messages": HI}
        if worker % 4 == 0:
            return await gateway.hang_up_after_first_chunk(worker, "tpm", body)
        return await gateway.chat(worker, "tpm", body)

    calls = await load(TPM_SECONDS, CLIENTS, stream)
    await asyncio.sleep(3)
    admitted = [d for d in gateway.decisions("tpm") if d["decision"] == "admit"]
    settled = [(d["tokens_in"] or 0) + (d["tokens_out"] or 0) if d["tokens_in"] is not None else d["reserved_tokens"]
               for d in admitted]
    reservation = max(d["reserved_tokens"] for d in admitted)
    most = most_in_any_window([d["at"] for d in admitted], settled)
    cut = sum(1 for d in admitted if d["status"] == 499)
    rows.append(("tokens: most settled tokens in any 60 s window (streams, 1 in 4 cut short)",
                 f"≤ {TPM} + one reservation ({reservation})",
                 f"{most} ({len(admitted)} admitted, {cut} cut short, {len(calls)} calls)", most <= TPM + reservation))

    return rows


async def concurrency_phase(gateway: Gateway, fake_url: str) -> list[tuple[str, str, str, bool]]:
    """1,000 hang-ups mid-stream by clients that wait as Retry-After says (as the openai SDK does), then 1,000 by
    clients that ignore it and retry every 20 ms (a refusal storm that leaves LiteLLM little CPU)."""
    rows = []
    for patient in (True, False):
        before = len(httpx.get(f"{fake_url}/_fake/log", timeout=30).json())
        hung_up, calls = 0, []

        async def hanger(worker: int) -> None:
            nonlocal hung_up
            while hung_up < DISCONNECTS:
                call = await gateway.hang_up_after_first_chunk(
                    worker, "slots", {"model": "long", "stream": True, "messages": HI})
                calls.append(call)
                if call.status == 200:
                    hung_up += 1
                else:
                    await asyncio.sleep((call.retry_after or 1) if patient else 0.02)

        await asyncio.gather(*(hanger(i) for i in range(int(os.environ.get("PROOF_HANGERS", 32)))))
        await asyncio.sleep(3)
        leaked = redis.Redis.from_url(REDIS_URL).zcard("gw:lim:{proof}:endpoint:slots:concurrency")
        log = [r for r in httpx.get(f"{fake_url}/_fake/log", timeout=30).json()[before:] if r["model"] == "long"]
        at_provider = most_in_flight(log)
        open_for = sorted((r["finished_at"] or r["received_at"]) - r["received_at"] for r in log)
        to_the_end = sum(r["outcome"] == "answered" for r in log)
        refusals = sum(c.status == 429 for c in calls)
        took = max(c.done for c in calls) - min(c.sent for c in calls)
        clients = "clients waiting as Retry-After says" if patient else "clients retrying every 20 ms"
        rows += [
            (f"concurrency {SLOTS}, {clients}: leases left after {hung_up} client hang-ups mid-stream", "0",
             str(leaked), leaked == 0),
            (f"concurrency {SLOTS}, {clients}: most streams open at the provider at once", f"≤ {SLOTS}",
             f"{at_provider} ({len(calls)} calls in {took:.0f} s, {refusals} refused); after the client left, the "
             f"provider's stream stayed open a median {statistics.median(open_for) * 1000:.0f} ms (p99 "
             f"{open_for[int(len(open_for) * 0.99)] * 1000:.0f} ms), {to_the_end} of {len(log)} to its end (~2 s)",
             at_provider <= SLOTS),
        ]
    return rows


async def budget_phase(gateway: Gateway, fake_url: str) -> list[tuple[str, str, str, bool]]:
    rows = []

    async def spender(worker: int) -> None:
        while (await gateway.chat(worker, "budget", {"model": "dear", "max_tokens": 240, "messages": HI})).status \
                == 200:
            pass

    await asyncio.gather(*(spender(i) for i in range(CLIENTS)))
    await asyncio.sleep(2)
    ledger = query(gateway.database_url, "SELECT count(*) AS n, coalesce(sum(cost), 0) AS spent FROM audit_events "
                   "WHERE tenant = 'proof' AND endpoint = 'budget' AND status = 200")[0]
    counter = sum(int(redis.Redis.from_url(REDIS_URL).get(key) or 0)
                  for key in redis.Redis.from_url(REDIS_URL).keys("gw:lim:{proof}:endpoint:budget:usd_day:*")) / 1e6
    rows.append((f"budget ${BUDGET:.2f}/day, 64 concurrent requests of ≤ $0.05: settled spend", f"≤ ${BUDGET:.2f}",
                 f"${float(ledger['spent']):.4f} in the ledger over {ledger['n']} answers; Redis counter "
                 f"${counter:.4f}", float(ledger["spent"]) <= BUDGET and counter <= BUDGET))
    return rows


PHASES = {"requests": requests_phase, "shadow": shadow_phase, "tokens": tokens_phase,
          "concurrency": concurrency_phase, "budget": budget_phase}


def most_in_flight(calls: list[dict]) -> int:
    edges = sorted([(c["received_at"], 1) for c in calls] + [(c["finished_at"] or c["received_at"], -1) for c in calls])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def main() -> None:
    workdir = ROOT / "var" / "bench-limits-proof"
    workdir.mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    database = f"gw_proof_{uuid.uuid4().hex[:8]}"
    as_superuser(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    processes = []
    try:
        fake, fake_url = start_fake_provider(workdir / "fake.log", FAKE)
        processes.append(fake)
        litellm_config = write_litellm_config(workdir / "litellm_config.yaml", fake_url,
                                              {name: PRICES for name in FAKE})
        config = workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump({"tenants": {"proof": {
            "models": list(FAKE), "endpoints": {name: {"limits": limits} for name, limits in ENDPOINTS.items()}}}}))
        keys = {name: gateway_cli(config, "keys", "create", "--tenant", "proof", "--name", name, "--endpoint", name)
                for name in ENDPOINTS}
        env = {"GATEWAY_LITELLM_MASTER_KEY": "sk-proof-master", "GATEWAY_INTERNAL_SECRET": "proof-secret",
               "GATEWAY_DATABASE_URL": database_url, "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_CONFIG": str(config),
               "GATEWAY_LITELLM_CONFIG": str(litellm_config)}
        port, litellm_port = free_port(), free_port()
        processes.append(start([str(BIN / "gateway"), "up", "--config", str(config), "--litellm-config",
                                str(litellm_config)], workdir / "gateway.log",
                               {**env, "GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(litellm_port),
                                "GATEWAY_VAR_DIR": str(workdir / "var-a")}))
        wait_until(f"http://127.0.0.1:{port}/readyz", 120, processes[-1], workdir / "gateway.log")
        (workdir / "b").mkdir(exist_ok=True)
        second = start_wrapper(workdir / "b", {**env, "GATEWAY_LITELLM_PORT": str(litellm_port)})
        processes.append(second.process)
        gateway = Gateway([f"http://127.0.0.1:{port}", second.url], keys, database_url)
        started = time.monotonic()
        rows = asyncio.run(_run(gateway, fake_url))
        took = time.monotonic() - started
    finally:
        for process in reversed(processes):
            stop(process)
        as_superuser(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    report = render(rows, took)
    print("\n" + report)
    chosen = os.environ.get("PROOF_PHASES")  # some phases only: a file of their own, beside the full run's
    name = f"limits_proof_{chosen.replace(',', '_')}.md" if chosen and set(chosen.split(",")) != set(PHASES) \
        else "limits_proof.md"
    (ROOT / "bench" / "results" / name).write_text(report)


async def _run(gateway: Gateway, fake_url: str):
    try:
        return await prove(gateway, fake_url)
    finally:
        await gateway.aclose()


def render(rows: list[tuple[str, str, str, bool]], took: float) -> str:
    lines = [f"# Admission at full scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {took / 60:.1f} min)", "",
             "Two wrapper replicas (`gateway up`, and a second wrapper on the same LiteLLM) sharing Redis and the "
             "audit log on PostgreSQL; the fake provider behind LiteLLM; 64 clients alternating between the replicas "
             "(bench/limits_proof.py says how each figure is taken).", "",
             "| check | goal | measured | met |", "|---|---|---|:---:|"]
    lines += [f"| {check} | {goal} | {measured} | {'yes' if met else '**no**'} |" for check, goal, measured, met in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
