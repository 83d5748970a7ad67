"""`model: auto`'s classifier against the labelled held-out prompts, and LiteLLM 1.108.5's complexity_router on
the same prompts, in one run: agreement with the labels and time per decision.

The labels (tests/data/complexity_heldout.yaml) say whether a careful person would send a prompt to the cheap
tier or the frontier one. The gateway's classifier (wrapper/routing/complexity.py) was tuned on
tests/data/complexity_dev.yaml only. LiteLLM's router scores four tiers (SIMPLE, MEDIUM, COMPLEX, REASONING);
both ways of cutting them in two are shown. Writes bench/results/routing_classifier.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrapper.routing.complexity import classify  # noqa: E402
from wrapper.routing.tiers import DEFAULT_THRESHOLD  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = 20  # each prompt classified this many times; the median time per prompt is kept


def prompts(name: str) -> list[dict]:
    return yaml.safe_load((ROOT / "tests" / "data" / f"complexity_{name}.yaml").read_text())


def last_user(item: dict) -> tuple[str, int]:
    prompt = item["prompt"]
    if isinstance(prompt, str):
        return prompt, 1
    users = [message["content"] for message in prompt if message["role"] == "user"]
    return users[-1], len(users)


def timed(decide, items: list[dict]) -> tuple[list, list[float]]:
    answers, times = [], []
    for item in items:
        samples = []
        for _ in range(RUNS):
            started = time.perf_counter()
            answer = decide(item)
            samples.append(time.perf_counter() - started)
        answers.append(answer)
        times.append(statistics.median(samples))
    return answers, times


def row(name: str, labels: list[str], picked: list[str], times: list[float]) -> str:
    agree = sum(a == b for a, b in zip(labels, picked, strict=True)) / len(labels)
    complex_sent_cheap = sum(a == "complex" and b == "simple" for a, b in zip(labels, picked, strict=True))
    simple_sent_dear = sum(a == "simple" and b == "complex" for a, b in zip(labels, picked, strict=True))
    ordered = sorted(times)
    return (f"| {name} | {agree:.1%} | {complex_sent_cheap} | {simple_sent_dear} | "
            f"{statistics.median(times) * 1e6:.0f} | {ordered[int(len(ordered) * 0.99)] * 1e6:.0f} | "
            f"{ordered[-1] * 1e6:.0f} |")


def main() -> None:
    items = prompts("heldout")
    labels = [item["label"] for item in items]
    ours, our_times = timed(lambda item: classify(*last_user(item), tools=bool(item.get("tools"))), items)
    picked = ["complex" if c.score >= DEFAULT_THRESHOLD else "simple" for c in ours]
    rows = [row(f"gateway (threshold {DEFAULT_THRESHOLD})", labels, picked, our_times)]

    import litellm
    from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter

    router = litellm.Router(model_list=[{"model_name": tier, "litellm_params": {"model": "openai/x", "api_key": "x"}}
                                        for tier in ("simple", "medium", "complex", "reasoning")])
    theirs = ComplexityRouter("auto", router, {"tiers": {"SIMPLE": "simple", "MEDIUM": "medium",
                                                         "COMPLEX": "complex", "REASONING": "reasoning"}})
    tiers, their_times = timed(lambda item: str(theirs.classify(last_user(item)[0])[0]).rsplit(".", 1)[-1], items)
    for cheap in (("SIMPLE",), ("SIMPLE", "MEDIUM")):
        picked = ["simple" if tier in cheap else "complex" for tier in tiers]
        rows.append(row(f"LiteLLM complexity_router, {' and '.join(cheap)} as cheap", labels, picked, their_times))

    lines = [f"# `model: auto`: the classifier on held-out prompts ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"{len(items)} labelled prompts (tests/data/complexity_heldout.yaml: {labels.count('simple')} simple, "
             f"{labels.count('complex')} complex), never used to tune the gateway's classifier. Time per decision: "
             f"the median of {RUNS} runs per prompt, in process. Goal (issue 18): at least 85 % agreement, under 1 ms.",
             "", "| classifier | agreement | complex sent to the cheap tier | simple sent to the frontier | "
             "p50 µs | p99 µs | max µs |", "|---|---:|---:|---:|---:|---:|---:|", *rows, "",
             "LiteLLM's tiers seen on this set: " + ", ".join(sorted(set(tiers))) + "."]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "bench" / "results" / "routing_classifier.md").write_text(report)


if __name__ == "__main__":
    main()
