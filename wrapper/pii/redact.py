"""Step 4 of the flow: find personal data in what the request would send, and act on the policy.

Every text the provider would read is scanned (see `_text_slots`): message
contents, names, refusals and reasoning, tool-call arguments and results, tool
and function descriptions and parameter schemas, response_format schemas, stop
sequences, predicted output, `user`, metadata values, a tenant's extra fields,
embeddings input, and system prompts unless the policy leaves them out. The body is changed in place, so
nothing downstream (LiteLLM, the provider, the audit record) ever holds the
raw values. The context gets the types and counts found, never the values.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator

from presidio_analyzer import RecognizerResult
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.gateway_config import PiiMode, PiiPolicy
from wrapper.pii.restore import Restorer
from wrapper.pii.scanner import PiiScanner

logger = logging.getLogger("wrapper.pii")

SYSTEM_ROLES = frozenset({"system", "developer"})
# Scanning is CPU work: beyond this many characters it runs in a thread so other requests keep moving.
INLINE_SCAN_CHARS = 16_384

_anonymizer = AnonymizerEngine()


class _Pseudonyms:
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


async def protect(ctx: RequestContext, body: dict, scanner: PiiScanner) -> Restorer | None:
    """Apply the tenant's PII policy to the body; returns what restores placeholders in the answer, if any."""
    policy = ctx.tenant.pii
    mode = policy.mode_for(ctx.principal.endpoint)
    if mode is PiiMode.off:
        return None
    slots = list(_text_slots(body, policy, ctx.tenant.fields.for_endpoint(ctx.principal.endpoint)))
    try:
        if sum(len(container[key]) for container, key in slots) > INLINE_SCAN_CHARS:
            found = await asyncio.to_thread(_scan, slots, policy, scanner)
        else:
            found = _scan(slots, policy, scanner)
    except Exception as exc:  # a detector that fails must not let unscanned text through silently
        logger.error("PII detection failed (%s)", type(exc).__name__)
        if policy.on_failure == "closed":
            raise GatewayError(503, "PII detection is unavailable, so the request was not forwarded.",
                               type="service_unavailable", code="pii_unavailable") from None
        ctx.pii = {"mode": mode.value, "unscanned": True}
        return None
    counts = Counter(result.entity_type for _, _, results in found for result in results)
    ctx.pii = {"mode": mode.value, "found": dict(sorted(counts.items()))}
    if mode is PiiMode.block:
        if counts:
            raise GatewayError(400, f"The request contains data this endpoint may not send: {', '.join(sorted(counts))}.",
                               code="pii_detected")
        return None
    pseudonyms = _Pseudonyms() if mode is PiiMode.pseudonymize else None
    for container, key, results in found:
        if results:
            container[key] = _replace(container[key], results, pseudonyms)
    return Restorer(pseudonyms.originals()) if pseudonyms and pseudonyms.by_value else None


# Between the texts of one request, scanned as one: no recognizer's pattern spans it (it is neither a word, a digit
# nor a space, and blank lines surround it). One scan instead of one per field: a tool schema's ten descriptions
# cost ~70 us each as separate scans.
_SEPARATOR = "\n\n\u2042\n\n"


def _scan(slots, policy: PiiPolicy, scanner: PiiScanner) -> list[tuple[object, object, list[RecognizerResult]]]:
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


def _replace(text: str, results: list[RecognizerResult], pseudonyms: _Pseudonyms | None) -> str:
    if pseudonyms is None:
        operators = {r.entity_type: OperatorConfig("replace", {"new_value": f"<{r.entity_type}>"}) for r in results}
    else:
        for result in sorted(results, key=lambda r: r.start):  # numbered in reading order
            pseudonyms.placeholder(result.entity_type, text[result.start:result.end])
        operators = {r.entity_type: OperatorConfig("custom", {"lambda": _numbered(pseudonyms, r.entity_type)}) for r in results}
    return _anonymizer.anonymize(text, results, operators).text


def _numbered(pseudonyms: _Pseudonyms, entity: str):
    return lambda value: pseudonyms.placeholder(entity, value)


def _text_slots(body: dict, policy: PiiPolicy, extra_fields: frozenset[str]) -> Iterator[tuple[object, object]]:
    """(container, key) of every non-empty string the provider would read.

    Left alone, by design: identifiers (model, roles, ids, tool and schema names, JSON Schema keywords such as
    `type` and property names), image URLs and base64 data (images, audio, files), and reasoning models'
    `thinking_blocks`, whose signature a provider checks.
    """
    for message in body.get("messages") or ():
        if message.get("role") in SYSTEM_ROLES and not policy.system_prompts:
            continue
        yield from _content_slots(message)
        yield from _texts(message, ("name", "refusal", "reasoning_content"))
        for call in message.get("tool_calls") or ():
            yield from _texts(call.get("function") or {}, ("arguments",))
            yield from _texts(call.get("custom") or {}, ("input",))
        yield from _texts(message.get("function_call") or {}, ("arguments",))
    for tool in body.get("tools") or ():
        for definition in (tool.get("function"), tool.get("custom")):
            if definition:
                yield from _texts(definition, ("description",))
                yield from _schema_texts(definition, "parameters")
                yield from _schema_texts(definition, "format")
    for function in body.get("functions") or ():
        yield from _texts(function, ("description",))
        yield from _schema_texts(function, "parameters")
    json_schema = (body.get("response_format") or {}).get("json_schema")
    if json_schema:
        yield from _texts(json_schema, ("description",))
        yield from _schema_texts(json_schema, "schema")
    prediction = body.get("prediction")
    if prediction:
        yield from _content_slots(prediction)
    yield from _texts(body, ("user",))
    for key in ("stop", "metadata", *extra_fields):
        if key in body:
            yield from _leaves(body, key)
    if "input" in body:  # embeddings
        value = body["input"]
        if _is_text(value):
            yield body, "input"
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if _is_text(item):
                    yield value, index
                elif not isinstance(item, str):  # token ids: text nobody here can read
                    raise GatewayError(400, "With PII protection on, embeddings input must be text, not token ids.",
                                       param="input", code="pii_unscannable_input")


def _content_slots(message: dict) -> Iterator[tuple[object, object]]:
    content = message.get("content")
    if _is_text(content):
        yield message, "content"
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                yield from _texts(part, ("text", "refusal"))


def _texts(container: dict, keys: tuple[str, ...]) -> Iterator[tuple[object, object]]:
    for key in keys:
        if _is_text(container.get(key)):
            yield container, key


# JSON Schema keywords whose values are vocabulary or names, not text: changing them would break the schema.
_SCHEMA_WORDS = frozenset({"type", "format", "$ref", "$schema", "$id", "required", "additionalProperties"})


def _schema_texts(container: dict, key: str) -> Iterator[tuple[object, object]]:
    if isinstance(container.get(key), dict | list):
        yield from _leaves(container, key, skip=_SCHEMA_WORDS)


def _leaves(container, key, skip: frozenset[str] = frozenset()) -> Iterator[tuple[object, object]]:
    """Every non-empty string inside container[key] (depth is bounded where the body is parsed)."""
    value = container[key]
    if _is_text(value):
        yield container, key
    elif isinstance(value, dict):
        for inner in value:
            if inner not in skip:
                yield from _leaves(value, inner, skip)
    elif isinstance(value, list):
        for index in range(len(value)):
            yield from _leaves(value, index, skip)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != ""
