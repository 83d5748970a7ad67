"""The prompt-injection heuristics (wrapper/guardrails/injection.py) on the corpus (tests/data/injection_prompts.yaml):
detection and false-positive rates per split and threshold, and the time per 2 KB prompt.
Writes bench/results/guardrails_injection.md."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from wrapper.guardrails.injection import DEFAULT_THRESHOLD, score  # noqa: E402

THRESHOLDS = (0.3, DEFAULT_THRESHOLD, 0.6, 0.8)
NOTES = {"dev": "the rules were written against it",
         "heldout": "written after dev; measured once: 73 %, 1 false positive (a question quoting an attack), which "
                    "led to the `mentioned` rule, checked on new dev examples",
         "heldout_2": "written after that change; measured once: 100 %, 2 false positives (`jailbroken` alone, "
                      "\"the original instructions for a shelf\"), which led to narrower persona and reveal rules",
         "heldout_3": "written after that change; measured once: the clean figure"}


def main() -> None:
    corpus = yaml.safe_load((ROOT / "tests" / "data" / "injection_prompts.yaml").read_text())
    lines = [f"# Prompt-injection heuristics ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"Default threshold {DEFAULT_THRESHOLD}. Detection: attacks at or above the threshold; false positives: "
             "benign look-alikes at or above it.", "",
             "| split | attacks | benign | " + " | ".join(f"detected / false pos. at {t}" for t in THRESHOLDS) + " | note |",
             "|---|---:|---:|" + "---:|" * len(THRESHOLDS) + "---|"]
    for split, texts in corpus.items():
        attacks = [score(t)[0] for t in texts["attacks"]]
        benign = [score(t)[0] for t in texts["benign"]]
        cells = [f"{sum(s >= t for s in attacks) / len(attacks):.0%} / {sum(s >= t for s in benign)}"
                 for t in THRESHOLDS]
        lines.append(f"| {split} | {len(attacks)} | {len(benign)} | " + " | ".join(cells) + f" | {NOTES.get(split, '')} |")
    prompt = ("The quarterly review covered hiring, the roadmap and the budget for next year. " * 30)[:2048]
    taken = []
    for _ in range(500):
        started = time.perf_counter()
        score(prompt)
        taken.append((time.perf_counter() - started) * 1000)
    taken.sort()
    lines += ["", f"Time per 2 KB prompt: p50 {taken[250]:.2f} ms, p99 {taken[495]:.2f} ms (one core, in process).", "",
              "False positives at the default threshold on the held-out splits: "
              + "; ".join(f"{split}: " + (", ".join(repr(t) for t in texts["benign"] if score(t)[0] >= DEFAULT_THRESHOLD)
                                          or "none")
                          for split, texts in corpus.items() if split != "dev")]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "bench" / "results" / "guardrails_injection.md").write_text(report)


if __name__ == "__main__":
    main()
