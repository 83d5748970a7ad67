"""The built-in checks, compiled once per policy: what each finds in a text, and how much of a stream it holds back.

A span check (terms, regex, secrets, a domain check's chunks) finds `Finding`s in a text. On a stream it sees the
text not yet released plus what came just before it, and the gateway holds back `hold` characters, so no match it
can make is ever released before it is seen whole:
- banned_terms / profanity: case-, accent- and width-folded, whole words only (`ban` does not match `bank`),
  whitespace inside a term matches up to 8 whitespace characters; one trie-shaped regex however long the list.
  Hold: the longest term plus its gaps, at most 64 + 7 per gap, + 1 for the word boundary.
- regex: the operator's patterns on the text as written; hold `max_match` (default 64) + 1.
- secrets: the PII step's secret patterns (API keys, AWS key ids, JWTs, private key blocks, URL passwords).
  Each is recognised by a bounded prefix (hold 64); once recognised, a redaction goes on masking the rest of the
  token (its characters) however long it runs, across events.
Whole-text checks need the end (of a choice's text): json (valid JSON when `response_format` asks for it, and the
JSON Schema of `json_schema`; on a stream, ended as soon as the text can no longer become JSON), must_match, and a
domain check's `check_output_end`. size counts characters as they come.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import regex

from wrapper.config.guardrails import GuardrailCheck
from wrapper.guardrails.normalise import fold, folded, original_span

WORD_GAP = r"\s{1,8}"
SECRET_HOLD = 64
PROFANITY = Path(__file__).with_name("profanity.txt")


@dataclass(frozen=True)
class Finding:
    """What a check found: where (character offsets in the text it read) and what, never the text itself."""

    start: int
    end: int
    type: str


class SpanCheck:
    """A check that finds spans; `hold`: characters of a stream it needs to see at once."""

    hold = 0
    continues: dict[str, re.Pattern] = {}  # finding type -> the characters that continue it (secrets)

    def __init__(self, spec: GuardrailCheck) -> None:
        self.spec, self.name, self.action = spec, spec.label, spec.action

    def find(self, text: str) -> list[Finding]:
        raise NotImplementedError


class TermList(SpanCheck):
    def __init__(self, spec: GuardrailCheck, terms: tuple[str, ...] | None = None) -> None:
        super().__init__(spec)
        words = sorted({" ".join(fold(term).split()) for term in (terms or spec.terms)} - {""})
        self.hold = max(len(w) + 7 * w.count(" ") for w in words) + 1
        self.pattern = re.compile(r"(?<!\w)(?:" + _trie(words) + r")(?!\w)")

    def find(self, text: str) -> list[Finding]:
        text_folded, where = folded(text)
        found = []
        for match in self.pattern.finditer(text_folded):
            start, end = original_span(where, match.start(), match.end(), len(text))
            found.append(Finding(start, end, "term"))
        return found


class Patterns(SpanCheck):
    def __init__(self, spec: GuardrailCheck) -> None:
        super().__init__(spec)
        self.patterns = [re.compile(p) for p in spec.patterns]
        self.hold = spec.max_match + 1

    def find(self, text: str) -> list[Finding]:
        return [Finding(m.start(), m.end(), "pattern")
                for pattern in self.patterns for m in pattern.finditer(text) if m.end() > m.start()]


# type -> (a bounded prefix that recognises it, the characters that continue it)
SECRETS = {
    "API_KEY": (r"(?<![\w-])(?:sk-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{20}|gh[pousr]_[A-Za-z0-9]{36})",
                r"[A-Za-z0-9_\-]"),
    "AWS_ACCESS_KEY_ID": (r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", None),
    "JWT": (r"(?<![\w-])eyJ[A-Za-z0-9_\-]{8,40}\.eyJ", r"[A-Za-z0-9_\-.]"),
    "PRIVATE_KEY": (r"-----BEGIN (?:[A-Z]{1,12} ){0,3}PRIVATE KEY-----", r"[A-Za-z0-9+/=\s]"),
    "PASSWORD": (r"(?<=[a-zA-Z][\w+.\-]{0,20}://[^\s:/@]{0,32}:)[^\s@/]{1,24}(?=@)", None),
}


class Secrets(SpanCheck):
    hold = SECRET_HOLD

    def __init__(self, spec: GuardrailCheck) -> None:
        super().__init__(spec)
        self.patterns = [(kind, regex.compile(prefix)) for kind, (prefix, _) in SECRETS.items()]
        self.continues = {kind: re.compile(rest + "+") for kind, (_, rest) in SECRETS.items() if rest}

    def find(self, text: str) -> list[Finding]:
        found = []
        for kind, pattern in self.patterns:
            for match in pattern.finditer(text):
                end = match.end()
                if (rest := self.continues.get(kind)) and (more := rest.match(text, end)):
                    end = more.end()
                found.append(Finding(match.start(), end, kind))
        return found


class Domain(SpanCheck):
    """A domain guardrail (docs: wrapper/guardrails/__init__.py): the operator's class, by import path."""

    def __init__(self, spec: GuardrailCheck) -> None:
        super().__init__(spec)
        module, _, name = spec.path.partition(":")
        self.impl = getattr(import_module(module), name)(**spec.options)
        self.hold = min(int(getattr(self.impl, "hold", 0)), 256)

    def find(self, text: str) -> list[Finding]:
        method = getattr(self.impl, "check_output_chunk", None)
        return list(method(text) or ()) if method else []

    def at_end(self, text: str) -> list[Finding]:
        method = getattr(self.impl, "check_output_end", None)
        return list(method(text) or ()) if method else []

    async def on_input(self, texts: list[str]) -> list[tuple[int, Finding]]:
        method = getattr(self.impl, "check_input", None)
        if method is None:
            return []
        result = method(texts)
        if inspect.isawaitable(result):
            result = await result
        return [(index, finding) for index, finding in result or () if 0 <= index < len(texts)]  # its own texts only


def span_check(spec: GuardrailCheck) -> SpanCheck | None:
    if spec.check == "banned_terms":
        return TermList(spec)
    if spec.check == "profanity":
        return TermList(spec, tuple(line.strip() for line in PROFANITY.read_text().splitlines()
                                    if line.strip() and not line.startswith("#")))
    if spec.check == "regex":
        return Patterns(spec)
    if spec.check == "secrets":
        return Secrets(spec)
    if spec.check == "python":
        return Domain(spec)
    return None


def _trie(words: list[str]) -> str:
    """One alternation for a whole list, shaped as a trie (`ban(?:k|ned)`): a regex engine tries each
    alternative in turn, so a flat list of 1,000 terms would be read 1,000 times at every position."""
    tree: dict = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def render(node: dict) -> str:
        ends = "" in node
        branches = [(WORD_GAP if char == " " else re.escape(char)) + render(child)
                    for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ends else "(?:" + "|".join(branches) + ")"
        return body + "?" if ends else body

    return render(tree)
