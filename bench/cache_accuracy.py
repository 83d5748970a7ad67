"""False hits and paraphrase hits of the template and semantic cache layers, on the pair sets under tests/data/.

For each pair (a, b), as two chat requests of one tenant, endpoint and model at temperature 0:
- template: a hit when both have the same template key (wrapper/cache/keys.py);
- semantic: a hit when both fall in the same bucket (slot values, earlier messages, parameters: step.semantic_view),
  the cosine of their templates' MiniLM embeddings reaches the threshold, and meaning.differs finds nothing.
`different` and `near` pairs must give 0 hits in both layers; `paraphrases` should hit the semantic layer at least
80 % of the time at the default threshold. Two sets: the development set the rules were shaped on, and a held-out
set written after them. Prints the rates per kind and a sweep of thresholds; writes bench/results/cache_accuracy.md.
"""

from __future__ import annotations

import statistics
from collections import Counter
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrapper.cache import keys  # noqa: E402
from wrapper.cache.embedding import MiniLM  # noqa: E402
from wrapper.cache.meaning import differs  # noqa: E402
from wrapper.cache.step import semantic_view  # noqa: E402
from wrapper.config.models import CachePolicy, Mode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"bench"
SCOPE = keys.scope_of("acme", "support", "chat", "fake-chat", False)
THRESHOLDS = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90)


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
                       "apart": differs(views[0].said, views[1].said),
                       "cosine": float(np.dot(vectors[0], vectors[1]))})
    return judged


def semantic_hit(pair: dict, threshold: float) -> bool:
    return pair["bucket"] and pair["cosine"] >= threshold and pair["apart"] is None


SETS = (("development", "cache_pairs.yaml", "written first; the rules of wrapper/cache/meaning.py were shaped on it"),
        ("held out", "cache_pairs_heldout.yaml",
         "written afterwards by someone who had not seen the rules. Its first run (threshold 0.75: 15 false hits, "
         "75.0 % of paraphrases) showed three gaps, fixed in general and not for its wording: ids with a hyphen "
         "(`B2309-A`), URLs of any scheme (`s3://`), an opposite beside its own word (`switch off ... on my plan`), "
         "and undo/revert as negations; its word lists were not extended from it"))


def table(name: str, data: dict, model: MiniLM, timings: list[float], default: float) -> tuple[list[str], dict]:
    different = judge(data["different"], model, timings)
    near = judge(data.get("near") or [], model, timings)
    paraphrases = judge(data["paraphrases"], model, timings)
    lines = [f"## {name}", "", "| pairs | n | template hits | same semantic bucket | semantic hits at default "
             "| kept apart by meaning.py | most similar (cosine) |", "|---|---:|---:|---:|---:|---:|---:|"]

    def row(label: str, group: list[dict], bold: bool = False) -> None:
        hits = sum(semantic_hit(p, default) for p in group)
        apart = sum(p["bucket"] and p["cosine"] >= default and p["apart"] is not None for p in group)
        shown = f"**{hits}**" if bold else str(hits)
        lines.append(f"| {label} | {len(group)} | {sum(p['template'] for p in group)} | "
                     f"{sum(p['bucket'] for p in group)} | {shown} | {apart} | "
                     f"{max((p['cosine'] for p in group), default=0):.3f} |")

    for kind in sorted({p["differs"] for p in different}):
        row(f"differ by {kind}", [p for p in different if p["differs"] == kind])
    row("**all that differ**", different, bold=True)
    if near:
        row("different questions, same topic", near, bold=True)
    found = sum(semantic_hit(p, default) for p in paraphrases)
    lines.append(f"| **paraphrases** | {len(paraphrases)} | {sum(p['template'] for p in paraphrases)} | "
                 f"{sum(p['bucket'] for p in paraphrases)} | **{found} ({found / len(paraphrases):.1%})** | "
                 f"{sum(p['bucket'] and p['apart'] is not None for p in paraphrases)} | "
                 f"median {statistics.median(p['cosine'] for p in paraphrases):.3f} |")
    lines += ["", "| threshold | false hits (differ + same topic) | paraphrase hits |", "|---:|---:|---:|"]
    for threshold in THRESHOLDS:
        false = sum(semantic_hit(p, threshold) for p in different + near)
        hit = sum(semantic_hit(p, threshold) for p in paraphrases)
        lines.append(f"| {threshold} | {false} | {hit / len(paraphrases):.1%} |")
    missed = [p for p in paraphrases if not semantic_hit(p, default)]
    reasons = Counter(p["apart"] for p in missed if p["bucket"] and p["apart"])
    lines += ["", f"Paraphrases missed at the default threshold: {sum(not p['bucket'] for p in missed)} in another "
              f"bucket (a slot value written differently), {sum(p['bucket'] and p['apart'] is None for p in missed)} "
              f"below the threshold, kept apart: {dict(reasons.most_common()) or 'none'}."]
    wrong = [p for p in different + near if semantic_hit(p, default)]
    if wrong:
        lines += ["", "False hits at the default threshold:", ""]
        lines += [f"- {p['cosine']:.3f} ({p.get('differs', 'same topic')}): {p['a']!r} / {p['b']!r}" for p in wrong]
    return lines + [""], {"false": len(wrong), "paraphrase": found / len(paraphrases)}


def main() -> None:
    model, timings = MiniLM(), []
    default = CachePolicy().semantic_threshold
    lines = [f"# Cache layers: false hits and paraphrase hits ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             "Each pair as two chat requests of one tenant, endpoint and model at temperature 0. Template: the same "
             "template key. Semantic: the same bucket (slot values, earlier messages, parameters), cosine of the "
             f"MiniLM embeddings of the templates at or above the threshold (default {default}), and "
             "wrapper/cache/meaning.py finding nothing that tells the two apart. `different` pairs differ in one "
             "number, amount, date, id, name or entity, or a negation (some also reworded); `same topic` pairs "
             "are different questions with shared words; neither may hit. Paraphrases should.", ""]
    for name, file, about in SETS:
        path = ROOT / "tests" / "data" / file
        if not path.exists():
            continue
        data = yaml.safe_load(path.read_text())
        lines += [f"Set: tests/data/{file}, {about}.", ""]
        lines += table(name, data, model, timings, default)[0]
    lines += [f"Embedding time per text: p50 {statistics.median(timings):.1f} ms, p99 "
              f"{sorted(timings)[int(len(timings) * 0.99)]:.1f} ms (numpy, this machine, one thread at a time)."]
    report = "\n".join(lines) + "\n"
    print(report)
    (ROOT / "bench" / "results" / "cache_accuracy.md").write_text(report)


if __name__ == "__main__":
    main()
