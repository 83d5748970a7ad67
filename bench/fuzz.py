"""The fuzz run at length: tests/stack/test_fuzz.py against the real stack with many more bodies and queries.

The suite sends 3,000 bodies per model route and 2,000 audit and cost queries; this sends
FUZZ_BODIES (default 50,000) and FUZZ_QUERIES (default 20,000) and writes what came back, by
status, to bench/results/fuzz.md. A failure (a 500, a hang, an answer outside the OpenAI envelope)
fails the run and prints hypothesis's smallest failing example.

Run: .venv/bin/python bench/fuzz.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODIES = int(os.environ.get("FUZZ_BODIES", 50_000))
QUERIES = int(os.environ.get("FUZZ_QUERIES", 20_000))


def main() -> int:
    with tempfile.TemporaryDirectory() as workdir:
        report = Path(workdir) / "fuzz.json"
        env = {**os.environ, "GATEWAY_FUZZ_BODIES": str(BODIES), "GATEWAY_FUZZ_QUERIES": str(QUERIES),
               "GATEWAY_FUZZ_REPORT": str(report), "GATEWAY_FUZZ_TIMEOUT": "7200"}
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/stack/test_fuzz.py"],
                             cwd=ROOT, env=env)
        results = json.loads(report.read_text()) if report.exists() else {}
    statuses = sorted({int(code) for target in results.values() for code in target["statuses"]})
    lines = [f"# Fuzz run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "",
             f"tests/stack/test_fuzz.py with {BODIES:,} bodies per model route and {QUERIES:,} audit and cost queries; "
             f"pytest exit {run.returncode} ({'no failure' if run.returncode == 0 else 'FAILED'}).", "",
             "| target | sent | seconds | per second | " + " | ".join(str(code) for code in statuses) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(statuses)]
    for target, result in results.items():
        counts = {int(code): n for code, n in result["statuses"].items()}
        sent, seconds = sum(counts.values()), result["seconds"] or 0
        lines.append(f"| {target} | {sent:,} | {seconds:.0f} | {sent / seconds if seconds else 0:.0f} | "
                     + " | ".join(f"{counts.get(code, 0):,}" for code in statuses) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    (ROOT / "bench" / "results" / "fuzz.md").write_text(table)
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
