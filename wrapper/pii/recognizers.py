"""What counts as personal data or a secret: Presidio recognizers, built once, no model, no network.

Presidio's own pattern recognizers cover email, credit cards (Luhn), IBAN
(checksum), US SSN and IP addresses. Two are replaced:
- phone numbers: Presidio's matcher runs libphonenumber over the whole text once
  per region (25 ms for 2 KB here); this one finds candidates with one regex and
  asks libphonenumber only about those;
- email: Presidio validates the domain with tldextract's default extractor,
  which downloads the public suffix list; this one uses the list tldextract ships.
Secrets (API keys, AWS key ids, JWTs, private key blocks, passwords in URLs) are
plain patterns. Named-entity recognition (names, places) would need a spaCy
model, which nothing here downloads: see the README.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
import regex
import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    UsSsnRecognizer,
)

from wrapper.config import PiiRecognizer

# Regions whose national numbers are recognised without a +country prefix. NANP numbers
# (US, CA) are written without a trunk prefix; the others only count when they start with 0.
NANP_REGIONS = ("US", "CA")
TRUNK_ZERO_REGIONS = ("GB", "DE", "FR", "NL", "IT", "IE", "CH", "AT", "BE", "AU", "IN")

_offline_domains = tldextract.TLDExtract(suffix_list_urls=())  # the snapshot shipped with tldextract


class _Prefiltered:
    """Skips a recognizer's patterns when the text lacks a string that every match contains."""

    needle: str

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        if self.needle not in text:
            return []
        return super().analyze(text, entities, nlp_artifacts, regex_flags)


class OfflineEmailRecognizer(_Prefiltered, EmailRecognizer):
    needle = "@"
    # Presidio's pattern may start anywhere in a run of URL characters and backtrack through it
    # (0.4 ms per 2 KB with a few @). This one starts only where a local part can start, so each
    # run is read once; the local part is what addresses use in practice: letters, digits, . _ + -.
    PATTERNS = [Pattern("Email", r"(?<![\w.+\-])[\w+\-](?:[\w.+\-]{0,62}[\w+\-])?@[\w\-]+(?:\.[\w\-]+)+", 0.5)]

    def validate_result(self, pattern_text: str) -> bool:
        return _offline_domains(pattern_text).fqdn != ""


class _PrefilteredPatterns(_Prefiltered, PatternRecognizer):
    def __init__(self, needle: str, **kwargs) -> None:
        self.needle = needle
        super().__init__(**kwargs)


def _card_recognizer() -> CreditCardRecognizer:
    """Presidio's card patterns, plus Mastercard's 2-series (2221-2720), which they miss; Luhn checks both."""
    two_series = Pattern("Mastercard 2-series", r"\b2[2-7]\d{2}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3)
    return CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, two_series])


def _ip_recognizers() -> list[EntityRecognizer]:
    """Presidio's IP patterns, the IPv6 ones (costly) only run on text that has a colon."""
    patterns = IpRecognizer.PATTERNS
    return [
        IpRecognizer(patterns=[p for p in patterns if p.name == "IPv4"], name="IpV4Recognizer"),
        _PrefilteredPatterns(":", supported_entity="IP_ADDRESS", name="IpV6Recognizer",
                             patterns=[p for p in patterns if p.name != "IPv4"], context=IpRecognizer.CONTEXT),
    ]


class PhoneRecognizer(EntityRecognizer):
    """Phone numbers: +country numbers anywhere, national numbers of common regions, checked by libphonenumber."""

    CANDIDATE = regex.compile(
        r"(?<![\w+.\-/])"  # not the middle of a word, a version, a path or a longer number
        r"(?:\+\d{1,3}[ .\-]?)?"  # +country
        r"(?:\(\d{1,5}\)[ .\-]?)?"  # (area)
        r"\d{1,5}(?:[ .\-]?\d{1,5}){1,5}"
        r"(?![\w.\-/]?\d)"
    )

    def __init__(self) -> None:
        super().__init__(supported_entities=["PHONE_NUMBER"], name="PhoneRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[RecognizerResult]:
        results = []
        for match in self.CANDIDATE.finditer(text):
            if sum(ch.isdigit() for ch in match.group()) >= 7:
                results += _numbers_in(text, match.start(), match.end())
        return results


def _numbers_in(text: str, start: int, end: int) -> list[RecognizerResult]:
    """The phone numbers in a run of digit groups. The whole run first; else, as the run may also hold
    a date or an id written next to the number, its longest space-delimited parts, left to right."""
    if _is_phone_number(text[start:end]):
        return [_phone(text, start, end)]
    words = [(start + m.start(), start + m.end()) for m in regex.finditer(r"\S+", text[start:end])]
    found, first = [], 0
    while first < len(words):
        for last in range(len(words) - 1, first - 1, -1):
            if (first, last) != (0, len(words) - 1) and _is_phone_number(text[words[first][0]:words[last][1]]):
                found.append(_phone(text, words[first][0], words[last][1]))
                first = last
                break
        first += 1
    return found


def _phone(text: str, start: int, end: int) -> RecognizerResult:
    return RecognizerResult("PHONE_NUMBER", start, end, 0.75 if text[start] == "+" else 0.6)


# How NANP numbers are written: 415-555-0132, (415) 555-0132, 415.555.0132, 4155550132, 1 415 555 0132.
NANP_SHAPE = regex.compile(r"(?:1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-]?)\d{3}[ .\-]?\d{4}")
# Dates, alone or followed by an hour (2024-05-06 23, 06.05.2024 10): never phone numbers.
DATE_START = regex.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}(?!\d)")


@lru_cache(maxsize=16384)  # a chat resends its whole history with every turn: the same numbers, again and again
def _is_phone_number(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15 or DATE_START.match(candidate):
        return False
    if candidate.startswith("+"):
        regions: tuple[str | None, ...] = (None,)
    elif candidate.lstrip("(").startswith("0"):
        if not 8 <= digits <= 13:  # the lengths of national numbers written with their trunk 0
            return False
        regions = TRUNK_ZERO_REGIONS
    else:
        if not NANP_SHAPE.fullmatch(candidate):
            return False
        regions = NANP_REGIONS
    for region in regions:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _secret(entity: str, name: str, pattern: str, score: float = 0.9) -> PatternRecognizer:
    return PatternRecognizer(supported_entity=entity, name=name, patterns=[Pattern(name, pattern, score)])


SECRET_RECOGNIZERS = (
    # OpenAI-style keys (sk-, sk-proj-) and GitHub tokens.
    lambda: _secret("API_KEY", "api_key", r"(?<![\w-])(?:sk-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{36,})"),
    lambda: _secret("AWS_ACCESS_KEY_ID", "aws_access_key_id", r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    lambda: _secret("JWT", "jwt", r"(?<![\w-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    lambda: _secret("PRIVATE_KEY", "private_key",
                    r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]+?-----END (?:[A-Z]+ )*PRIVATE KEY-----", 1.0),
    # Only the password of scheme://user:password@host (user may be empty: redis://:pw@host), so the URL still reads as one.
    lambda: _PrefilteredPatterns("://", supported_entity="PASSWORD", name="url_password", patterns=[Pattern(
        "url_password", r"(?<=[a-zA-Z][\w+.\-]*://[^\s:/@]{0,128}:)[^\s@/]{1,128}(?=@)", 0.9)]),
)


def built_in_recognizers() -> list[EntityRecognizer]:
    return [
        OfflineEmailRecognizer(),
        PhoneRecognizer(),
        _card_recognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        *_ip_recognizers(),
        *(make() for make in SECRET_RECOGNIZERS),
    ]


def tenant_recognizers(custom: tuple[PiiRecognizer, ...]) -> list[EntityRecognizer]:
    return [
        PatternRecognizer(supported_entity=r.entity, name=f"tenant_{r.entity.lower()}",
                          patterns=[Pattern(f"{r.entity.lower()}_{i}", p, r.score) for i, p in enumerate(r.patterns)])
        for r in custom
    ]
