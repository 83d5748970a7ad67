"""False hits and paraphrase hits of the template and semantic cache layers, on tests/data/cache_pairs.yaml.

For each pair (a, b), as two chat requests of one tenant, endpoint and model at temperature 0:
- template: a hit when both have the same template key (wrapper/cache/keys.py);
- semantic: a hit when both fall in the same bucket (slot values, polarity cues and names equal: semantic.py) and the
  cosine of their templates' MiniLM embeddings reaches the threshold.
`different` pairs (a number, an amount, a date, an id, a name or entity, or a negation apart) must give 0 hits in
both layers; `paraphrases` should hit the semantic layer at least 80 % of the time at the default threshold.
Prints the rates per kind and a sweep of thresholds; writes bench/results/cache_accuracy.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrapper.cache import keys  # noqa: E402
from wrapper.cache.embedding import MiniLM  # noqa: E402
from wrapper.cache.step import semantic_view  # noqa: E402
from wrapper.config.models import CachePolicy, Mode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"bench"
SCOPE = keys.scope_of("acme", "support", "chat", "fake-chat", False)
THRESHOLDS = (0.80, 0.85, 0.875, 0.90, 0.925, 0.95)


def request(text: str) -> dict:
    return {"model": "fake-chat", "temperature": 0, "messages": [{"role": "user", "content": text}]}


def judge(pairs: list[dict], model: MiniLM, timings: list[float]) -> list[dict]:
    """Each pair with: same template key, same bucket, cosine."""
    judged = []
    for pair in pairs:
        a, b = request(pair["a"]), request(pair["b"])
        views = [semantic_view(SECRET, "chat", body, SCOPE, "acme", Mode.enforce) for body in (a, b)]
        vectors = []
        for view in views:
            started = time.perf_counter()
            vectors.append(model.embed(view.text))
            timings.append((time.perf_counter() - started) * 1000)
        judged.append({**pair,
                       "template": keys.template_digest(SECRET, SCOPE, "chat", a)
                       == keys.template_digest(SECRET, SCOPE, "chat", b),
                       "bucket": views[0].bucket == views[1].bucket,
                       "cosine": float(np.dot(vectors[0], vectors[1]))})
    return judged


def semantic_hit(pair: dict, threshold: float) -> bool:
    return pair["bucket"] and pair["cosine"] >= threshold


def main() -> None:
    data = yaml.safe_load((ROOT / "tests" / "data" / "cache_pairs.yaml").read_text())
    model, timings = MiniLM(), []
    different, paraphrases = judge(data["different"], model, timings), judge(data["paraphrases"], model, timings)
    default = CachePolicy().semantic_threshold
    kinds = sorted({p["differs"] for p in different})
    lines = [f"# Cache layers: false hits and paraphrase hits ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"{len(different)} pairs that must not share an answer and {len(paraphrases)} paraphrase pairs "
             "(tests/data/cache_pairs.yaml, written for this and never tuned on), each as two chat requests of one "
             "tenant, endpoint and model. Semantic: same bucket (slot values, polarity cues, names) and cosine of "
             f"MiniLM embeddings of the templates at or above the threshold (default {default}).", "",
             "| pairs | n | template hits | same semantic bucket | semantic hits at default | most similar (cosine) |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind in kinds:
        group = [p for p in different if p["differs"] == kind]
        lines.append(f"| differ by {kind} | {len(group)} | {sum(p['template'] for p in group)} | "
                     f"{sum(p['bucket'] for p in group)} | {sum(semantic_hit(p, default) for p in group)} | "
                     f"{max(p['cosine'] for p in group):.3f} |")
    lines.append(f"| **all that differ** | {len(different)} | {sum(p['template'] for p in different)} | "
                 f"{sum(p['bucket'] for p in different)} | **{sum(semantic_hit(p, default) for p in different)}** | "
                 f"{max(p['cosine'] for p in different):.3f} |")
    hits = sum(semantic_hit(p, default) for p in paraphrases)
    lines.append(f"| **paraphrases** | {len(paraphrases)} | {sum(p['template'] for p in paraphrases)} | "
                 f"{sum(p['bucket'] for p in paraphrases)} | **{hits} ({hits / len(paraphrases):.1%})** | "
                 f"median {statistics.median(p['cosine'] for p in paraphrases):.3f} |")
    lines += ["", "Threshold sweep (semantic layer):", "", "| threshold | false hits | paraphrase hits |",
              "|---:|---:|---:|"]
    for threshold in THRESHOLDS:
        false = sum(semantic_hit(p, threshold) for p in different)
        found = sum(semantic_hit(p, threshold) for p in paraphrases)
        lines.append(f"| {threshold} | {false} | {found / len(paraphrases):.1%} |")
    missed = [p for p in paraphrases if not semantic_hit(p, default)]
    lines += ["", f"Embedding time per text: p50 {statistics.median(timings):.1f} ms, p99 "
              f"{sorted(timings)[int(len(timings) * 0.99)]:.1f} ms (numpy, this machine, one thread at a time).", "",
              "Paraphrases missed at the default threshold, by cause: "
              f"{sum(not p['bucket'] for p in missed)} in another bucket (a cue word or name differs), "
              f"{sum(p['bucket'] for p in missed)} below the threshold."]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "bench" / "results" / "cache_accuracy.md").write_text(report)


if __name__ == "__main__":
    main()
