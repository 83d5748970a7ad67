"""Finding personal data in text: one Presidio AnalyzerEngine for the process, no NLP model."""

from __future__ import annotations

from functools import lru_cache

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NoOpNlpEngine

from wrapper.gateway_config import PiiRecognizer
from wrapper.pii.recognizers import built_in_recognizers, tenant_recognizers

# Below this, a match is a guess (Presidio's bare 9-digit "SSN" scores 0.05): a number, not data.
SCORE_THRESHOLD = 0.3


class _NoContextWords(ContextAwareEnhancer):
    """Without an NLP model there are no lemmas to match context words against: skip the pass (and its deep copy)."""

    def __init__(self) -> None:
        super().__init__(context_similarity_factor=0, min_score_with_context_similarity=0, context_prefix_count=0,
                         context_suffix_count=0)

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        return raw_results


class PiiScanner:
    def __init__(self) -> None:
        nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        nlp_engine.load()
        registry = RecognizerRegistry(recognizers=built_in_recognizers(), supported_languages=["en"])
        self.engine = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"],
                                     default_score_threshold=SCORE_THRESHOLD, context_aware_enhancer=_NoContextWords())
        self.built_in_entities = frozenset(self.engine.get_supported_entities("en"))

    def find(self, text: str, entities: tuple[str, ...] | None, custom: tuple[PiiRecognizer, ...]) -> list[RecognizerResult]:
        """The spans of `text` that hold the given types (all types when None), tenant patterns included."""
        ad_hoc = _compiled(custom) if custom else None
        wanted = list(entities) if entities is not None else None
        if wanted is not None and not wanted:
            return []
        return self.engine.analyze(text, language="en", entities=wanted, ad_hoc_recognizers=ad_hoc)


@lru_cache(maxsize=256)
def _compiled(custom: tuple[PiiRecognizer, ...]) -> list:
    """Tenant patterns compiled once per distinct set (the config's models are frozen, hence hashable)."""
    return tenant_recognizers(custom)
