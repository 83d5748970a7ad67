"""What makes two requests the same answer: the exact layer's canonical request and the template layer's slots.

Every key is an HMAC (keyed by a secret derived from the gateway's signing key) over the scope (tenant, endpoint,
route, the resolved model, whether it streams) and what the layer compares, so a key says nothing of the prompt and
a client can neither choose nor guess one, and two tenants or endpoints never share an entry.

The template layer: each text of the request (message contents, a completion's prompt) with its slots, the values
that make one answer differ from another, replaced by typed placeholders; the key is the normalised template plus
the slot values exactly as written. Slots: URLs, e-mail addresses, host and file names (`api.example.com`,
`q3.xlsx`), dates, times, money, ids (a token mixing letters and digits, `#123`, `v2.3.1`, uuids), numbers (a
sign only where no word precedes it: `XJ42-77A1` is ids), quoted strings and acronyms (`US` stays apart from
`us`). Normalised in the fixed parts: Unicode form (NFKC), case, runs of whitespace, and punctuation at the end of a text. So "Refund order
#48213" and "refund  order #48213!" share an entry; "#48214" does not, nor does anything whose words differ.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
import orjson

# Fields that do not change the answer: how it is delivered or who is billed. Everything else is in the key.
DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})
# Texts longer than this in all are keyed by the exact layer only: templating is linear, but ~2 s a megabyte on the
# event loop is more than a cache lookup may cost
TEMPLATE_MAX_CHARS = 65_536

_SLOTS = [
    ("URL", r"\b[a-z][a-z0-9+.-]{1,15}://[^\s<>\"']+"),  # any scheme: s3://, postgres://
    ("EMAIL", r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    ("HOST", r"(?<![\w.-])[a-z0-9][\w-]*(?:\.[\w-]+)*\.[a-z][a-z0-9]{1,23}\b"),  # api.example.com, report.pdf
    ("DATE", r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
             r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? \d{1,2}(?:st|nd|rd|th)?"
             r"(?:,? \d{4})?\b|\b\d{1,2}(?:st|nd|rd|th)? (?:of )?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct"
             r"|nov|dec)[a-z]*\.?(?:,? \d{4})?\b"),
    ("TIME", r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?\b|\b\d{1,2}\s?[ap]\.?m\.?\b"),
    ("MONEY", r"[$€£¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:k|m|bn|million|billion))?\b"
              r"|\b\d[\d,]*(?:\.\d+)?\s?(?:usd|eur|gbp|jpy|chf|dollars?|euros?|pounds?)\b"),
    ("ID", r"#\w+|\bv\d+(?:\.\d+)+\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
           r"|(?<![\w-])(?=[a-z0-9_-]*\d)(?=[a-z0-9_-]*[a-z])[a-z0-9][a-z0-9_-]{2,}\b"),
    ("NUM", r"(?<![\w\x00-])[-+]?\b\d[\d,]*(?:\.\d+)?%?|\b\d[\d,]*(?:\.\d+)?%?"),
    ("QUOTE", r"\"[^\"\n]{1,200}\"|“[^”\n]{1,200}”|'[^'\n]{2,200}'(?!\w)"),
]
_SLOT = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _SLOTS), re.IGNORECASE)
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9]{1,9}\b")  # before case is folded: `US`, `GDPR`, `2FA` stays a slot (ID)
_COMPOUND_ID = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+\b")  # B2309-A
# Patterns whose words may hold `-` or `.` start only where such a run starts (the look-behinds): tried at every
# boundary inside `a-a-a-…` they would each scan to its end, quadratic in a hostile text
_SPACE = re.compile(r"\s+")
_END_PUNCTUATION = re.compile(r"[\s.!?;:,…]+$")


def key(secret: bytes, *parts: object) -> str:
    return hmac.new(secret, orjson.dumps(parts, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def scope_of(tenant: str, endpoint: str | None, route: str, model: str | None, stream: bool) -> tuple:
    return tenant, endpoint or "", route, model or "", bool(stream)


def parameters(body: dict, texts_field: str | None) -> dict:
    """The fields that change the answer, but the texts the template layer reads (`messages`, `prompt`)."""
    return {k: v for k, v in body.items() if k not in DELIVERY_FIELDS and k != texts_field}


def template(text: str) -> tuple[str, list[str]]:
    """A text's normalised template and its slot values, in order."""
    text = unicodedata.normalize("NFKC", text)
    values: list[str] = []

    def slot(match: re.Match) -> str:
        values.append(match.group(0))
        return f"\x00{match.lastgroup}\x00"

    text = _COMPOUND_ID.sub(lambda m: (values.append(m.group(0)), "\x00id\x00")[1], text)  # lower: not an acronym
    text = _ACRONYM.sub(lambda m: (values.append(m.group(0)), "\x00ACRO\x00")[1], text)
    text = _SLOT.sub(slot, text)
    text = _END_PUNCTUATION.sub("", _SPACE.sub(" ", text.casefold()).strip())
    return text, values


def texts_of(route: str, body: dict) -> tuple[str, list] | None:
    """The field holding a request's texts and each message's role and parts; None when the template layer does not
    apply to this route (embeddings: exact only)."""
    if route == "chat" and isinstance(body.get("messages"), list):
        return "messages", [(m.get("role"), _parts(m.get("content")), _rest(m)) for m in body["messages"]
                            if isinstance(m, dict)]
    if route == "completions" and isinstance(body.get("prompt"), str):
        return "prompt", [("prompt", [body["prompt"]], {})]
    return None


def _parts(content: object) -> list:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):  # text parts as text; any other part (an image) exactly as sent
        return [p["text"] if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                else p for p in content]
    return [content]


def _rest(message: dict) -> dict:
    return {k: v for k, v in message.items() if k not in ("role", "content")}


def template_parts(messages: list) -> tuple[list, list[str]]:
    """Each message as (role, its parts' templates, the rest of it), and every slot value at the end."""
    values: list[str] = []
    shaped = []
    for role, parts, rest in messages:
        templated = []
        for part in parts:
            if isinstance(part, str):
                text, found = template(part)
                templated.append(text)
                values.extend(found)
            else:
                templated.append(part)
        shaped.append((role, templated, rest))
    return shaped, values


def exact_digest(secret: bytes, scope: tuple, body: dict) -> str:
    return key(secret, "exact", scope, parameters(body, None))


def template_digest(secret: bytes, scope: tuple, route: str, body: dict) -> str | None:
    """The template layer's key of a request; None when its route has no texts to template."""
    texts = texts_of(route, body)
    if texts is None:
        return None
    field, messages = texts
    if sum(len(part) for _, parts, _ in messages for part in parts if isinstance(part, str)) > TEMPLATE_MAX_CHARS:
        return None
    shaped, values = template_parts(messages)
    return key(secret, "template", scope, parameters(body, field), shaped, values)
