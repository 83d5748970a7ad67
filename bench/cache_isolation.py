"""Cache isolation at scale: the same prompts from two tenants and two endpoints of one tenant (each with its own
policy), on Redis, through two wrapper replicas: no request ever gets an entry another scope stored, in any layer.

Three scopes: tenant `north` endpoints `alpha` and `beta` (different TTLs: separate policies), tenant `south`
endpoint `alpha`; every layer enforced. For each of N prompts, each scope asks in a random order, through a random
replica, its first request worded as the prompt, its spacing changed (template) or a paraphrase (semantic), then asks
again. A scope's first request for a prompt can only be a hit if it found another scope's entry: a cross hit.
The provider must have been asked exactly three times per prompt (once per scope). Writes bench/results/cache_isolation.md.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.processes import (BIN, ROOT, free_port, start, start_fake_provider, stop, wait_until,  # noqa: E402
                                     write_litellm_config)
from tests.support.wrapper import start_wrapper  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/10"
PROMPTS = int(os.environ.get("ISOLATION_PROMPTS", 1700))  # x 3 scopes x 2 asks: 10,200 requests
LAYERS = {"exact": "enforce", "template": "enforce", "semantic": "enforce"}
SCOPES = [("north", "alpha"), ("north", "beta"), ("south", "alpha")]
FORMS = [("How do I reset my password for account {n}?", "Could you tell me how to reset the password of account {n}?"),
         ("What is the refund policy for order #{n}?", "Tell me the refund policy that applies to order #{n}."),
         ("Which plan includes {n} seats?", "Which of the plans comes with {n} seats?")]


def main() -> None:
    workdir = ROOT / "var" / "bench-cache-isolation"
    workdir.mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    processes = []
    try:
        fake, fake_url = start_fake_provider(workdir / "fake.log", {"echo": {"echo": True}})
        processes.append(fake)
        litellm_config = write_litellm_config(workdir / "litellm.yaml", fake_url, {"echo": {}})
        config = workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump({"tenants": {
            "north": {"models": ["echo"], "endpoints": {"alpha": {"cache": {**LAYERS, "ttl_seconds": 3600}},
                                                       "beta": {"cache": {**LAYERS, "ttl_seconds": 7200}}}},
            "south": {"models": ["echo"], "endpoints": {"alpha": {"cache": {**LAYERS, "ttl_seconds": 3600}}}}}}))
        keys = {scope: gateway_cli(config, "keys", "create", "--tenant", scope[0], "--name", scope[1], "--endpoint",
                                   scope[1]) for scope in SCOPES}
        env = {"GATEWAY_LITELLM_MASTER_KEY": "sk-iso", "GATEWAY_INTERNAL_SECRET": "iso-secret",
               "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_CONFIG": str(config),
               "GATEWAY_LITELLM_CONFIG": str(litellm_config), "OPENBLAS_NUM_THREADS": "1",
               # replicas share the signing key (as the chart's secret gives it): cache keys are derived from it
               "GATEWAY_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode()}
        port, litellm_port = free_port(), free_port()
        processes.append(start([str(BIN / "gateway"), "up", "--config", str(config), "--litellm-config",
                                str(litellm_config)], workdir / "gateway.log",
                               {**env, "GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(litellm_port),
                                "GATEWAY_VAR_DIR": str(workdir / "var-a")}))
        wait_until(f"http://127.0.0.1:{port}/readyz", 120, processes[-1], workdir / "gateway.log")
        (workdir / "b").mkdir(exist_ok=True)
        second = start_wrapper(workdir / "b", {**env, "GATEWAY_LITELLM_PORT": str(litellm_port)})
        processes.append(second.process)
        started = time.monotonic()
        results = asyncio.run(run([f"http://127.0.0.1:{port}", second.url], keys))
        took = time.monotonic() - started
        calls = Counter(r["body"]["messages"][-1]["content"].rsplit("[", 1)[-1]
                        for r in httpx.get(f"{fake_url}/_fake/log", timeout=60).json())
    finally:
        for process in reversed(processes):
            stop(process)
    report = render(results, calls, took)
    print(report)
    (ROOT / "bench" / "results" / "cache_isolation.md").write_text(report)


async def run(urls: list[str], keys: dict) -> list[dict]:
    rng = random.Random(19)
    run_id = uuid.uuid4().hex[:6]
    jobs = []
    for n in range(PROMPTS):
        question, paraphrase = FORMS[n % len(FORMS)]
        words = [question, question.replace(" ", "  ").lower(), paraphrase]
        tag = f"[{run_id}-{n}]"  # the provider's log counts calls per prompt and scope by it
        order = rng.sample(SCOPES, len(SCOPES))
        jobs.append([(scope, words[i % 3].format(n=n) + f" {tag}", tag) for i, scope in enumerate(order)])
    results: list[dict] = []
    semaphore = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=60) as client:

        async def ask(scope, text: str, first: bool) -> None:
            body = {"model": "echo", "temperature": 0, "messages": [{"role": "user", "content": text}]}
            reply = await client.post(f"{rng.choice(urls)}/v1/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {keys[scope]}"})
            results.append({"scope": scope, "first": first, "status": reply.status_code,
                            "layer": reply.headers.get("x-gateway-cache-layer")})

        async def prompt(job) -> None:
            async with semaphore:
                for scope, text, _ in job:  # each scope's first ask, in this prompt's random order
                    await ask(scope, text, True)
                await asyncio.sleep(0.1)  # stored
                for scope, text, _ in job:
                    await ask(scope, text, False)

        await asyncio.gather(*(prompt(job) for job in jobs))
    return results


def render(results: list[dict], calls: Counter, took: float) -> str:
    firsts = [r for r in results if r["first"]]
    cross = [r for r in firsts if r["layer"]]
    seconds = [r for r in results if not r["first"]]
    by_layer = Counter(r["layer"] for r in seconds)
    per_prompt = Counter(calls.values())  # how many prompts the provider was asked how many times
    lines = [f"# Cache isolation ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {took / 60:.1f} min)", "",
             f"{len(results)} requests through two wrapper replicas sharing Redis: {PROMPTS} prompts, each asked by "
             "three scopes (tenant north endpoints alpha and beta with separate policies, tenant south endpoint "
             "alpha), every layer enforced; each scope's first ask worded as the prompt, with its spacing and case "
             "changed, or as a paraphrase (in turn), then asked again.", "",
             "| check | goal | measured | met |", "|---|---|---|:---:|",
             f"| first asks answered from the cache (another scope's entry) | 0 | {len(cross)} of {len(firsts)} "
             f"({Counter(r['layer'] for r in cross) or 'none'}) | {'yes' if not cross else '**no**'} |",
             f"| provider calls per prompt (one per scope) | exactly 3 | {dict(per_prompt)} (calls: prompts) | "
             f"{'yes' if set(per_prompt) == {3} else '**no**'} |",
             f"| second asks answered from the scope's own entry | all | {len(seconds) - by_layer[None]} of "
             f"{len(seconds)} ({dict((k, v) for k, v in by_layer.items() if k)}) | "
             f"{'yes' if not by_layer[None] else '**no**'} |",
             f"| answers other than 200 | 0 | {sum(r['status'] != 200 for r in results)} | "
             f"{'yes' if all(r['status'] == 200 for r in results) else '**no**'} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
