"""Finding personal data in text: one Presidio AnalyzerEngine for the process.

No NLP model by default: every built-in type is a pattern. Names and places need
named-entity recognition, on only when GATEWAY_PII_NER_MODEL names a spaCy
pipeline that is installed (a package such as en_core_web_sm, or a directory).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpEngine, NoOpNlpEngine, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from wrapper.config import NER_ENTITIES, PiiRecognizer
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


class PiiSetupError(Exception):
    """The configured NER pipeline cannot be used; raised at start, never per request."""


class PiiScanner:
    def __init__(self, ner_model: str | None = None) -> None:
        nlp_engine = _nlp_engine(ner_model)
        recognizers = built_in_recognizers()
        if ner_model:
            recognizers.append(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
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


def _nlp_engine(ner_model: str | None) -> NlpEngine:
    if not ner_model:
        engine: NlpEngine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    else:
        import spacy.util

        # Presidio would download a missing model: the gateway never fetches anything at run time.
        if not (spacy.util.is_package(ner_model) or Path(ner_model).is_dir()):
            raise PiiSetupError(f"GATEWAY_PII_NER_MODEL={ner_model!r} is neither an installed spaCy pipeline package "
                                "nor a pipeline directory; install it (e.g. the en_core_web_sm wheel) or unset the variable")
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": ner_model}])
    engine.load()
    return engine


@lru_cache(maxsize=256)
def _compiled(custom: tuple[PiiRecognizer, ...]) -> list:
    """Tenant patterns compiled once per distinct set (the config's models are frozen, hence hashable)."""
    return tenant_recognizers(custom)
