"""The pair sets of tests/data through the template and semantic layers' rules: every pair that must not share an
answer in the template layer, and a fixed sample of them and of the paraphrases in the semantic layer (MiniLM
embeddings, ~15 ms each; bench/cache_accuracy.py runs every pair)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from wrapper.cache import keys
from wrapper.cache.embedding import MiniLM
from wrapper.cache.meaning import differs
from wrapper.cache.step import semantic_view
from wrapper.config.models import CachePolicy, Mode

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = b"k"
SCOPE = keys.scope_of("acme", "support", "chat", "fake-chat", False)
SETS = [path for path in (DATA / "cache_pairs.yaml", DATA / "cache_pairs_heldout.yaml") if path.exists()]


def chat(text: str) -> dict:
    return {"model": "fake-chat", "temperature": 0, "messages": [{"role": "user", "content": text}]}


def must_differ(data: dict) -> list[dict]:
    return data["different"] + (data.get("near") or [])


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM()


def semantic_hit(model: MiniLM, a: str, b: str) -> bool:
    views = [semantic_view(SECRET, "chat", chat(text), SCOPE, "acme", Mode.enforce) for text in (a, b)]
    if views[0].bucket != views[1].bucket or differs(views[0].said, views[1].said):
        return False
    cosine = float(np.dot(model.embed(views[0].text), model.embed(views[1].text)))
    return cosine >= CachePolicy().semantic_threshold


@pytest.mark.parametrize("path", SETS, ids=lambda p: p.name)
def test_no_pair_that_differs_shares_a_template_entry(path):
    data = yaml.safe_load(path.read_text())
    shared = [p for p in must_differ(data) if keys.template_digest(SECRET, SCOPE, "chat", chat(p["a"]))
              == keys.template_digest(SECRET, SCOPE, "chat", chat(p["b"]))]
    assert len(must_differ(data)) >= 250 and shared == []


@pytest.mark.parametrize("path", SETS, ids=lambda p: p.name)
def test_a_sample_of_pairs_that_differ_never_hits_and_most_paraphrases_do(path, model):
    data = yaml.safe_load(path.read_text())
    wrong = [(p["a"], p["b"]) for p in must_differ(data)[::12] if semantic_hit(model, p["a"], p["b"])]
    assert wrong == []
    sample = data["paraphrases"][::8]
    found = sum(semantic_hit(model, p["a"], p["b"]) for p in sample)
    # a floor under today's rates (bench/results/cache_accuracy.md: 66 % and 58 % at the default threshold), so a
    # change that makes the layer useless fails here; the 80 % is measured by the bench, not promised here
    assert found >= 0.4 * len(sample), f"{found} of {len(sample)} paraphrases hit"
