"""Time PII protection adds to a request, in process (no HTTP, no provider).

The PII step's request half (wrapper/pii/step.py) is timed with perf_counter on one uvloop event loop,
as the wrapper runs it. The scanner is built once, as the wrapper builds it at
start-up. Each run gets a fresh deep copy of a chat body (one user message of
exactly 2,048 characters), because the step rewrites the body in place; the
copy is made outside the timed span. After a warm-up, p50 and p99 over the
runs, for three prompts:
  - a support ticket in plain prose with a handful of personal values (an email,
    an international phone number, a card number, an IBAN);
  - a technical prompt with no personal data but full of numbers (versions,
    dates, order ids, code);
  - a worst case packed with every type the gateway recognises but PEM private
    keys (one key block alone fills most of 2 KB): records of 10 values each;
in modes redact and pseudonymize (and off once, the floor: the policy lookup).
Then, for the support ticket pseudonymised, restoring an answer that echoes the
redacted prompt: as one chat completion (`Restorer.answer`) and as a stream of
50 SSE events then `data: [DONE]` (`Restorer.event` per event, `end` before [DONE]), timed
per answer. Prints a markdown table and writes it to bench/results/pii.md.
The goal (the issue's): at most 2 ms added at p50 for a 2 KB prompt.
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrapper.auth import Principal  # noqa: E402
from wrapper.config import Role, Tenant  # noqa: E402
from wrapper.context import RequestContext  # noqa: E402

_IMPORT_STARTED = time.perf_counter()  # the PII modules' own start-up cost: Presidio, libphonenumber, tldextract
from wrapper.pii import PiiScanner, PiiStep  # noqa: E402
from wrapper.routes.chat import ChatRoute  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _IMPORT_STARTED

RUNS = int(os.environ.get("BENCH_PII_RUNS", 2000))
WARMUP = int(os.environ.get("BENCH_PII_WARMUP", 200))
PROMPT_CHARS = 2048
STREAM_EVENTS = 50
GOAL_MS = 2.0

# Closing prose used to bring a prompt to exactly PROMPT_CHARS (it holds no personal data).
FILLER = (
    " Thanks in advance for looking into this; I am happy to provide more details, screenshots or logs if that helps,"
    " and I can be available for a short call during business hours this week if that is quicker for your team."
    " Please keep the ticket open until the issue is confirmed as resolved on our side as well."
) * 4

TICKET = """Subject: Charged twice for the annual renewal, and locked out of the dashboard

Hello support team,

I am writing about our company account, which is registered under maria.keller@posteo.de. Our annual plan renewed on 3 March and the renewal was charged twice to the same card, the Visa ending in 1111 (full number 4111 1111 1111 1111, in case you need it to find the transactions). Both charges show as settled on our statement, not pending, so this is not just a pre-authorisation that will drop off.

To make things worse, since the renewal nobody on the team can log in to the dashboard. The login page accepts the password and then sends us back to the sign-in screen without any error message. We tried three different browsers (Firefox, Chrome and Safari), cleared cookies, and tried from home and from the office network, always with the same result. Two colleagues who use single sign-on see exactly the same loop.

Could you please refund the duplicate charge? We would prefer the refund to go to our bank account rather than to the card, because the card is being replaced next week. The account is held at Commerzbank, IBAN DE89 3704 0044 0532 0130 00, in the name of Keller & Partner GmbH.

If you need to reach me, my direct line is +49 151 23456789 (weekdays, 9:00 to 17:30 Central European Time). I am travelling on Thursday, so email works better that day.

We have been customers for more than four years and have been happy with the service so far, so I hope this can be sorted out quickly. Our finance department needs the refund to be visible before the end of the month, when they close the quarter."""

TECHNICAL = """After upgrading our ingestion service from Python 3.11.4 to 3.12.1 (and pydantic 2.5.3 to 2.6.1, SQLAlchemy 2.0.23 to 2.0.25), batch imports became roughly 40% slower. Order ids like ORD-2024-0031987 and ORD-2024-0032011 now take 1.8 s each instead of 1.1 s. The regression started with build 7.14.2 (commit 3f9c2ab, released 2024-03-14) and is still there in 7.15.0-rc.2.

Timings from the nightly job on 2024-03-18, 02:00 UTC, 12,480 orders in 26 batches of 480:

    batch  orders  p50_ms  p99_ms  rss_mb
    01     480     1102    2210    812
    02     480     1876    3954    1024
    17     480     1911    4102    1536

The hot loop, simplified:

```python
def apply_discounts(lines: list[Line], rules: dict[int, Rule]) -> Decimal:
    total = Decimal("0.00")
    for index, line in enumerate(lines, start=1):
        rule = rules.get(line.sku % 1000)
        if rule and line.quantity >= rule.min_qty:
            total += line.price * line.quantity * (1 - rule.rate / 100)
        else:
            total += line.price * line.quantity
        if index % 250 == 0:
            session.flush()
    return total.quantize(Decimal("0.01"))
```

Config: pool_size=20, max_overflow=10, statement_timeout=30000, work_mem=64MB, on PostgreSQL 15.6 with 4 vCPUs and 16384 MB of RAM. SKUs range from 100000 to 999999; rule rates go from 2.5 to 35.0. Between 7.14.1 and 7.14.2 the only change in this module was moving from `Decimal` arithmetic on floats (1.1 * 3) to quantized values, plus bumping `orjson` from 3.9.10 to 3.9.15.

Questions: 1) is the 0.7 s difference per order likely from pydantic 2.6 validation of `Line` (about 35 fields, 12 of them Decimal)? 2) would moving the flush every 250 lines to every 1000 lines help, given the 30 s statement timeout? 3) how would you profile this with py-spy 0.3.14 on a container limited to 2 CPUs? Please answer with concrete steps and expected numbers, and keep the code compatible with Python 3.11 as well."""


def luhn(prefix: str, length: int = 16) -> str:
    """A card number with a valid check digit, grouped by four."""
    digits = [int(d) for d in prefix]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 0:  # these are doubled once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    number = prefix + str((10 - total % 10) % 10)
    assert len(number) == length
    return " ".join(number[i:i + 4] for i in range(0, length, 4))


def iban(country: str, bban: str) -> str:
    """An IBAN with valid check digits, grouped by four."""
    rearranged = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    code = f"{country}{98 - int(rearranged) % 97:02d}{bban}"
    return " ".join(code[i:i + 4] for i in range(0, len(code), 4))


PHONES = ("+44 20 7946 0958", "+1 415 555 2671", "+33 1 42 68 53 00", "+31 20 794 8521", "+41 44 668 18 00",
          "+34 912 345 678", "+39 06 6982 0000", "+61 2 9374 4000", "+353 1 677 1512", "+46 8 508 290 00")
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvZSJ9.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


def dense_record(i: int) -> str:
    """One record of a leaked customer/credentials dump: every type the gateway recognises."""
    return (
        f"#{i} mail {['anna', 'li.wei', 'j.smith', 'omar'][i % 4]}{i}@{['acme.com', 'mail.co.uk', 'firma.de'][i % 3]}"
        f" tel {PHONES[i % len(PHONES)]} card {luhn(f'{4 + i % 2}{i:02d}2 8765 4321 099'.replace(' ', ''))}"
        f" iban {iban('DE', f'370400{i:02d}05320130{i:02d}')} ssn 5{36 + i:02d}-22-19{80 + i:02d}"
        f" ip 203.0.113.{10 + i} / 2001:db8:85a3::8a2e:370:{7334 + i} key sk-proj-{'Xq7Lm2Np9Rt4Vw8Yz3Bc6Df1Gh5Jk0' + str(i)}"
        f" aws AKIAIOSFODNN7EXAMP{i:02d} jwt {JWT[:-2]}{i:02d}"
        f" db postgres://svc_{i}:Pw{i}x!9Kq2z@db{i}.internal:5432/orders\n"
    )


def exactly(text: str) -> str:
    """The text brought to PROMPT_CHARS characters: closing prose appended, then cut."""
    text = (text + "\n\n" + FILLER.strip())[:PROMPT_CHARS] if len(text) < PROMPT_CHARS else text[:PROMPT_CHARS]
    assert len(text) == PROMPT_CHARS, len(text)
    return text


def dense() -> str:
    text, i = "Clean up this export before I paste it into the migration script:\n", 1
    while len(text + dense_record(i)) <= PROMPT_CHARS:
        text += dense_record(i)
        i += 1
    return exactly(text.rstrip("\n"))


PROMPTS = {
    "support ticket (4 PII values)": exactly(TICKET),
    "technical, no PII, many numbers": exactly(TECHNICAL),
    "worst case: dense PII, 10 types": dense(),
}
REALISTIC = "support ticket (4 PII values)"


def body(prompt: str) -> dict:
    return {"model": "bench", "messages": [{"role": "user", "content": prompt}]}


def context(mode: str) -> RequestContext:
    ctx = RequestContext("bench")
    ctx.tenant = Tenant(pii={"mode": mode})
    ctx.principal = Principal("t", None, None, frozenset({Role.app}), "key:x")
    ctx.policy, ctx.route = ctx.tenant.policy(None), ChatRoute()
    return ctx


async def protect(ctx: RequestContext, request: dict, scanner: PiiScanner):
    """The step's request half, as the pipeline runs it (mode off: the pipeline's own check, nothing run)."""
    ctx.body = request
    step = PiiStep(scanner)
    return await step.request(ctx) if step.mode(ctx).value != "off" else None


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def time_protect(scanner: PiiScanner, prompt: str, mode: str) -> tuple[float, float, dict]:
    original = body(prompt)
    samples, found = [], None
    for run in range(WARMUP + RUNS):
        request, ctx = copy.deepcopy(original), context(mode)
        started = time.perf_counter()
        await protect(ctx, request, scanner)
        elapsed = time.perf_counter() - started
        if run >= WARMUP:
            samples.append(elapsed)
        if found is None:
            found = ctx.pii.get("found", {})
        elif ctx.pii.get("found", {}) != found:
            raise RuntimeError(f"findings changed between runs: {found} then {ctx.pii}")
    return *percentiles(samples), found


def time_per_answer(make: Callable[[], object]) -> tuple[float, float]:
    samples = []
    for run in range(WARMUP + RUNS):
        started = time.perf_counter()
        make()
        if run >= WARMUP:
            samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def time_restore(scanner: PiiScanner) -> tuple[list[tuple[str, float, float]], int]:
    """Restoring an answer that echoes the pseudonymised support ticket: whole, then as 50 SSE events."""
    request = body(PROMPTS[REALISTIC])
    restorer = (await protect(context("pseudonymize"), request, scanner)).half
    redacted = request["messages"][0]["content"]
    completion = orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": redacted}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 512, "completion_tokens": 512, "total_tokens": 1024},
    })
    size = -(-len(redacted) // STREAM_EVENTS)  # pieces cut by size, so some placeholders straddle two events
    pieces = [redacted[i:i + size] for i in range(0, len(redacted), size)]
    events = [b"data: " + orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench",
        "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if n == len(pieces) - 1 else None}],
    }) + b"\n\n" for n, piece in enumerate(pieces)] + [b"data: [DONE]\n\n"]

    # Not timed: the restored answer must be the prompt as the client sent it.
    if orjson.loads(restorer.answer(completion))["choices"][0]["message"]["content"] != PROMPTS[REALISTIC]:
        raise RuntimeError("the restored answer differs from the original prompt")
    streamed = "".join(orjson.loads(out[6:])["choices"][0]["delta"].get("content", "")
                       for out in map(restorer.event, events) if out != b"data: [DONE]\n\n")
    if streamed != PROMPTS[REALISTIC]:
        raise RuntimeError("the restored stream differs from the original prompt")

    def whole() -> None:
        restorer.answer(completion)

    def streamed_answer() -> None:
        for event in events:
            if event.startswith(b"data: [DONE]"):
                restorer.end()
            restorer.event(event)

    return [("whole answer (chat completion, 2 KB content)", *time_per_answer(whole)),
            (f"stream of {len(events) - 1} SSE events + [DONE]", *time_per_answer(streamed_answer))], len(restorer.originals)


def found_text(found: dict) -> str:
    return f"{sum(found.values())}: " + ", ".join(f"{entity} {count}" for entity, count in found.items()) if found else "0"


def verdict(p50: float) -> str:
    return f"{p50 / GOAL_MS:.2f}x, {'met' if p50 <= GOAL_MS else 'NOT met'}"


CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_corpus.yaml"


def corpus_accuracy(scanner: PiiScanner) -> list[str]:
    """Per type, how many of the corpus's raw values a finding covers; how many clean prompts get any finding."""
    import yaml

    corpus = yaml.safe_load(CORPUS.read_text())
    covered: dict[str, list[int]] = {}
    for case in corpus["with_pii"]:
        spans = [(r.start, r.end, r.entity_type) for r in scanner.find(case["text"], None, ())]
        for entity, values in case["values"].items():
            for value in values:
                start = case["text"].index(value)
                hits = covered.setdefault(entity, [0, 0, 0])
                hits[0] += 1
                hits[1] += all(any(a <= i < b for a, b, _ in spans) for i in range(start, start + len(value)))
                hits[2] += any(a <= start and start + len(value) <= b and t == entity for a, b, t in spans)
    flagged = [case["id"] for case in corpus["clean"] if scanner.find(case["text"], None, ())]
    lines = [f"Accuracy on the test corpus (`tests/data/pii_corpus.yaml`: {len(corpus['with_pii'])} prompts with personal "
             f"data, {len(corpus['clean'])} without but full of numbers, dates, versions, code and ids):", "",
             "| type | values | removed (covered by a finding) | found as this type |", "|---|---:|---:|---:|"]
    lines += [f"| {entity} | {n} | {removed} | {typed} |" for entity, (n, removed, typed) in sorted(covered.items())]
    lines += ["", f"False positives: {len(flagged)} of {len(corpus['clean'])} clean prompts had any finding "
              f"({len(flagged) / len(corpus['clean']):.0%}){': ' + ', '.join(flagged) if flagged else ''}."]
    return lines


async def main() -> None:
    started = time.perf_counter()
    scanner = PiiScanner()
    build_ms = (time.perf_counter() - started) * 1000
    ctx, request = context("pseudonymize"), body(PROMPTS[REALISTIC])
    started = time.perf_counter()
    await protect(ctx, request, scanner)
    first_ms = (time.perf_counter() - started) * 1000
    print(f"imports {IMPORT_SECONDS * 1000:.0f} ms, PiiScanner() {build_ms:.0f} ms, first protect() {first_ms:.1f} ms", flush=True)

    rows = []
    floor = await time_protect(scanner, PROMPTS[REALISTIC], "off")
    rows.append((REALISTIC, "off", *floor))
    for name, prompt in PROMPTS.items():
        for mode in ("redact", "pseudonymize"):
            rows.append((name, mode, *await time_protect(scanner, prompt, mode)))
            print(f"{name}, {mode}: p50 {rows[-1][2]:.3f} ms", flush=True)
    restore_rows, pseudonyms = await time_restore(scanner)

    lines = ["| prompt (2,048 chars) | mode | p50 ms | p99 ms | entities found | vs goal 2 ms (p50) |",
             "|---|---|---:|---:|---|---|"]
    lines += [f"| {name} | {mode} | {p50:.3f} | {p99:.3f} | {found_text(found) if mode != 'off' else '-'} | {verdict(p50)} |"
              for name, mode, p50, p99, found in rows]
    lines += ["", f"Restoring pseudonyms in an answer that echoes the redacted support ticket ({pseudonyms} placeholders), per answer:", "",
              "| answer | p50 ms | p99 ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {p50:.3f} | {p99:.3f} |" for name, p50, p99 in restore_rows]
    lines += ["", *corpus_accuracy(scanner)]
    lines += ["", f"Start-up, once per process: importing `wrapper.pii` (Presidio and its dependencies) {IMPORT_SECONDS * 1000:.0f} ms, "
              f"building `PiiScanner()` {build_ms:.0f} ms; the first `protect()` afterwards {first_ms:.1f} ms."]
    report = (
        f"# PII protection: time added per request\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. In process, one uvloop event loop, `protect()` timed "
        f"alone (the body's deep copy excluded); {RUNS:,} runs after {WARMUP} of warm-up per row; one user message of "
        f"{PROMPT_CHARS:,} characters. Goal: at most {GOAL_MS:.0f} ms added at p50 for a 2 KB prompt.\n\n"
        + "\n".join(lines) + "\n"
    )
    print("\n" + report)
    (Path(__file__).parent / "results" / "pii.md").write_text(report)


if __name__ == "__main__":
    uvloop.run(main())
