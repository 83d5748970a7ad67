"""What the guardrails cost and whether a streamed banned term ever leaks, in one run on this machine.

1. In process: the output half's time per streamed chunk with a 1,000-term list and the secrets check on (p50,
   p99 over every chunk of a long answer in 8-character pieces), and the input checks' time for a 2 KB prompt
   (1,000 terms, secrets, prompt-injection heuristics, size).
2. Through the real stack (`gateway up` in front of the fake provider): every term of a 20-term list cut at every
   offset into two pieces and at every pair of offsets into three, in both choices of n=2, streamed: leaks to the
   client (must be 0). Then an answer that matches nothing, streamed in 6-character pieces 40 ms apart: the
   largest gap between the provider sending a character and the client receiving it, in characters and ms.
Writes bench/results/guardrails.md.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.identity import gateway_cli  # noqa: E402
from tests.support.processes import ROOT, BIN, free_port, start, start_fake_provider, stop, wait_until  # noqa: E402
from tests.support.processes import write_litellm_config  # noqa: E402
from wrapper.guardrails.checks import SECRET_HOLD  # noqa: E402
from wrapper.guardrails.normalise import fold  # noqa: E402

TERMS = ["project falcon", "kill switch", "zero-day", "ban", "café noir", "operation nightfall", "red team",
         "blue harbor", "acme merger", "layoff list", "codename orion", "q3 forecast", "north star",
         "bank robbery", "launch date", "salary band", "board minutes", "root password", "private beta", "war room"]
THOUSAND = TERMS + [f"codeword{n:04d}" for n in range(1000 - len(TERMS))]
SPLIT = "\x1f"
CLEAN = ("The quarterly review covered hiring, the roadmap for the mobile app, customer churn in the northern region "
         "and the budget for next year, with no decisions taken. ") * 3


def in_process() -> list[str]:
    from wrapper.config import Mode
    from wrapper.config.guardrails import GuardrailsPolicy
    from wrapper.guardrails.output import OutputHalf
    from wrapper.guardrails.stack import Findings, compiled
    from wrapper.guardrails.step import _check_input
    from wrapper.routes.chat import ChatRoute

    policy = GuardrailsPolicy.model_validate({"mode": "enforce", "output": [
        {"check": "banned_terms", "terms": THOUSAND, "action": "redact"}, {"check": "secrets", "action": "redact"}],
        "input": [{"check": "banned_terms", "terms": THOUSAND}, {"check": "secrets", "action": "redact"},
                  {"check": "prompt_injection"}, {"check": "size", "max_chars": 20000}]})
    stack = compiled(policy)

    class Ctx:
        route = ChatRoute()
        guardrails: list = []

    per_chunk = []
    for _ in range(20):
        half = OutputHalf(stack, Ctx(), Findings([]), None)
        for i in range(0, len(CLEAN), 8):
            event = b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": CLEAN[i:i + 8]}, "finish_reason": None}]}) + b"\n\n"
            started = time.perf_counter()
            half.event(event)
            per_chunk.append((time.perf_counter() - started) * 1e6)
    prompt = (CLEAN * 4)[:2048]

    async def inputs() -> list[float]:
        taken = []
        for _ in range(300):
            slots = [({"role": "user", "content": prompt}, "content")]
            started = time.perf_counter()
            for mode in (Mode.shadow, Mode.enforce):
                await _check_input(stack.input[mode], mode, slots, {(id(slots[0][0]), "content")}, Findings([]))
            taken.append((time.perf_counter() - started) * 1e3)
        return taken

    per_prompt = asyncio.run(inputs())
    per_chunk.sort()
    per_prompt.sort()
    return ["| measure | p50 | p99 | goal |", "|---|---:|---:|---:|",
            f"| output checks per chunk (1,000 terms + secrets, 8-character chunks) | {per_chunk[len(per_chunk) // 2]:.0f} µs "
            f"| {per_chunk[int(len(per_chunk) * 0.99)]:.0f} µs | p99 <= 500 µs |",
            f"| input checks, 2 KB prompt (1,000 terms, secrets, injection, size) | {per_prompt[len(per_prompt) // 2]:.2f} ms "
            f"| {per_prompt[int(len(per_prompt) * 0.99)]:.2f} ms | p50 <= 1 ms |"]


def cases() -> list[str]:
    found = []
    for term in TERMS:
        sentence = f"Status: {term} is on the agenda."
        at = sentence.index(term)
        found += [sentence[:at + cut] + SPLIT + sentence[at + cut:] for cut in range(1, len(term))]
        found += [sentence[:at + a] + SPLIT + sentence[at + a:at + b] + SPLIT + sentence[at + b:]
                  for a in range(1, len(term)) for b in range(a + 1, len(term))]
    return found


def through_stack() -> list[str]:
    workdir = ROOT / "var" / "bench-guardrails"
    workdir.mkdir(parents=True, exist_ok=True)
    processes = []
    models = {"split": {"echo": True, "split_at": SPLIT}, "paced": {"echo": True, "split_at": SPLIT,
                                                                  "chunk_interval_ms": 40}}
    try:
        fake, fake_url = start_fake_provider(workdir / "fake.log", models)
        processes.append(fake)
        litellm = write_litellm_config(workdir / "litellm.yaml", fake_url, dict.fromkeys(models, {}))
        config = workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump({"tenants": {"bench": {"models": list(models), "guardrails": {
            "mode": "enforce", "output": [{"check": "banned_terms", "terms": TERMS},
                                          {"check": "secrets", "action": "redact"}]}}}}))
        key = gateway_cli(config, "keys", "create", "--tenant", "bench", "--name", "bench")
        port = free_port()
        stack = start([str(BIN / "gateway"), "up", "--config", str(config), "--litellm-config", str(litellm)],
                      workdir / "stack.log", {"GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(free_port()),
                                              "GATEWAY_VAR_DIR": str(workdir / "var")})
        processes.append(stack)
        url = f"http://127.0.0.1:{port}"
        wait_until(f"{url}/readyz", 120, stack, workdir / "stack.log")
        headers = {"authorization": f"Bearer {key}"}
        leaks, blocked, total = 0, 0, 0
        with httpx.Client(timeout=30, headers=headers) as client:
            for text in cases():
                reply = client.post(f"{url}/v1/chat/completions", json={
                    "model": "split", "stream": True, "n": 2, "messages": [{"role": "user", "content": text}]})
                said = {}
                for block in reply.text.split("\n\n"):
                    data = block.strip().removeprefix("data: ")
                    if data and data != "[DONE]":
                        for choice in orjson.loads(data).get("choices") or ():
                            said[choice["index"]] = said.get(choice["index"], "") + (choice["delta"].get("content") or "")
                total += 1
                blocked += '"content_filter"' in reply.text
                leaks += any(fold(term) in fold(t) or fold(term.split()[0]) in fold(t) for t in said.values()
                             for term in TERMS)
            gap = hold_back(client, url, fake_url)
    finally:
        for process in reversed(processes):
            stop(process)
    return [f"| streams (n=2), each a term cut into 2 or 3 pieces | {total:,} |", f"| ended with content_filter | "
            f"{blocked:,} |", f"| leaks (any term, or a term's first word, in what a client received) | **{leaks}** |",
            f"| largest hold-back of clean text: characters | {gap[0]} (the checks' hold: the longest term + 1 is "
            f"{max(len(t) for t in TERMS) + 1}, secrets' {SECRET_HOLD}) |", f"| largest hold-back of clean text: ms (pieces of 6 characters 40 ms "
            f"apart) | {gap[1]:.0f} |"]


def hold_back(client: httpx.Client, url: str, fake_url: str) -> tuple[int, float]:
    """Send a clean answer in 6-character pieces 40 ms apart; for each character, receipt time minus send time."""
    marker = uuid.uuid4().hex[:6]  # the first piece, whole (the body holds the pieces joined by \x1f)
    text = marker + " " + CLEAN[:300]
    pieces = [text[i:i + 6] for i in range(0, len(text), 6)]
    received: list[tuple[float, int]] = []  # (time, characters received so far)
    count = 0
    with client.stream("POST", f"{url}/v1/chat/completions", json={
            "model": "paced", "stream": True, "messages": [{"role": "user", "content": SPLIT.join(pieces)}]}) as reply:
        for line in reply.iter_lines():
            data = line.removeprefix("data: ").strip()
            if data and data != "[DONE]":
                for choice in orjson.loads(data).get("choices") or ():
                    count += len(choice["delta"].get("content") or "")
                received.append((time.monotonic(), count))
    record = next(r for r in httpx.get(f"{fake_url}/_fake/log").json() if marker in orjson.dumps(r["body"]).decode())
    sent, total = [], 0
    for piece, at in zip(pieces, record["chunk_times"], strict=False):
        total += len(piece)
        sent.append((at, total))
    # at each receipt: what the provider had sent by then, less what the client had
    worst_chars = max(next((c for t, c in reversed(sent) if t <= now), 0) - count for now, count in received)
    worst_ms = 0.0
    for at, chars in sent:
        arrived = next(t for t, n in received if n >= chars)
        worst_ms = max(worst_ms, (arrived - at) * 1000)
    return worst_chars, worst_ms


def main() -> None:
    lines = [f"# Guardrails: cost and leaks ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             "In process, the output half and the input checks as the step runs them:", "", *in_process(), "",
             "Through the stack (`gateway up`, the fake provider), output checks: 20 banned terms (block), secrets "
             "(redact):", "", "| | |", "|---|---|", *through_stack(), "",
             "The hold-back in characters is, at each event the client received, what the provider had sent by then "
             "less what the client had; in ms, for each character, its arrival at the client minus its departure from "
             "the provider (the last characters wait for the end of the stream: the finish event releases them)."]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "bench" / "results" / "guardrails.md").write_text(report)


if __name__ == "__main__":
    main()
