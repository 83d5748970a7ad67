"""Finding personal data in a request's texts, and replacing it: by its type, or by a numbered placeholder.

The texts are the route's (wrapper/routes: `user_texts`), each given as a slot
(container, key), and are replaced in place.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import Counter

from presidio_analyzer import RecognizerResult
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from wrapper.config import PiiPolicy
from wrapper.pii.scanner import PiiScanner
from wrapper.routes import Slot

# Scanning is CPU work: beyond this many characters it runs in a thread so other requests keep moving.
INLINE_SCAN_CHARS = 16_384

_anonymizer = AnonymizerEngine()
Found = list[tuple[object, object, list[RecognizerResult]]]  # (container, key, what is there)


class Pseudonyms:
    """Numbered placeholders, consistent within one request: the same value gets the same one."""

    def __init__(self) -> None:
        self.by_value: dict[tuple[str, str], str] = {}
        self.counts: Counter[str] = Counter()

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self.by_value:
            self.counts[entity] += 1
            self.by_value[key] = f"<{entity}_{self.counts[entity]}>"
        return self.by_value[key]

    def originals(self) -> dict[str, str]:
        return {placeholder: value for (_, value), placeholder in self.by_value.items()}


# Between the texts of one request, scanned as one: no recognizer's pattern spans it (it is neither a word, a digit
# nor a space, and blank lines surround it). One scan instead of one per field: a tool schema's ten descriptions
# cost ~70 us each as separate scans.
_SEPARATOR = "\n\n\u2042\n\n"


async def find(slots: list[Slot], policy: PiiPolicy, scanner: PiiScanner) -> Found:
    """What the policy's recognizers find in each slot's text; large requests are scanned in a worker thread."""
    if sum(len(container[key]) for container, key in slots) > INLINE_SCAN_CHARS:
        return await asyncio.to_thread(_scan, slots, policy, scanner)
    return _scan(slots, policy, scanner)


def replace(found: Found, pseudonyms: Pseudonyms | None) -> None:
    """Each finding replaced in its slot: by its type (redact), or by its numbered placeholder (pseudonymize)."""
    for container, key, results in found:
        if results:
            container[key] = _replace(container[key], results, pseudonyms)


def _scan(slots: list[Slot], policy: PiiPolicy, scanner: PiiScanner) -> Found:
    texts = [container[key] for container, key in slots]
    starts, offset = [], 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + len(_SEPARATOR)
    per_slot: list[list[RecognizerResult]] = [[] for _ in texts]
    for result in scanner.find(_SEPARATOR.join(texts), policy.entities, policy.recognizers) if texts else ():
        index = bisect_right(starts, result.start) - 1
        start = starts[index]
        if result.end <= start + len(texts[index]):  # within one text (a match across texts is no match)
            per_slot[index].append(RecognizerResult(result.entity_type, result.start - start, result.end - start,
                                                    result.score))
    return [(container, key, _one_per_span(results)) for (container, key), results in zip(slots, per_slot)]


def _one_per_span(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Overlapping findings (a card number's checksum inside an IBAN, an IBAN's tail that dials) become one:
    the union of their spans, so nothing is left half-replaced, named by the surest, then longest, of them."""
    groups: list[list[RecognizerResult]] = []
    for result in sorted(results, key=lambda r: r.start):
        if groups and result.start < max(r.end for r in groups[-1]):
            groups[-1].append(result)
        else:
            groups.append([result])
    merged = []
    for group in groups:
        best = max(group, key=lambda r: (r.score, r.end - r.start))
        merged.append(RecognizerResult(best.entity_type, min(r.start for r in group), max(r.end for r in group), best.score))
    return merged


def _replace(text: str, results: list[RecognizerResult], pseudonyms: Pseudonyms | None) -> str:
    if pseudonyms is None:
        operators = {r.entity_type: OperatorConfig("replace", {"new_value": f"<{r.entity_type}>"}) for r in results}
    else:
        for result in sorted(results, key=lambda r: r.start):  # numbered in reading order
            pseudonyms.placeholder(result.entity_type, text[result.start:result.end])
        operators = {r.entity_type: OperatorConfig("custom", {"lambda": _numbered(pseudonyms, r.entity_type)}) for r in results}
    return _anonymizer.anonymize(text, results, operators).text


def _numbered(pseudonyms: Pseudonyms, entity: str):
    return lambda value: pseudonyms.placeholder(entity, value)
