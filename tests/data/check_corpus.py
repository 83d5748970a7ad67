"""Self-check for tests/data/pii_corpus.yaml: is the corpus consistent with its own rules?

Run from the repository root:  .venv/bin/python tests/data/check_corpus.py [path]

It checks the structure (unique kebab-case ids, texts of 1-15 lines), that every listed
value occurs verbatim in its text and has the shape its entity type requires (Luhn,
IBAN mod-97, libphonenumber validity, SSN rules, ipaddress, key/token/JWT/private-key
shapes), the coverage targets, and, with a small independent scanner, that no text holds
PII that is not listed (with_pii) or any PII at all (clean). This tests the corpus, not
the gateway's detector. Prints a summary and OK, or the first problem and exits 1.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import sys
from collections import Counter
from pathlib import Path

import phonenumbers
import yaml

DEFAULT_PATH = Path(__file__).with_name("pii_corpus.yaml")

TYPES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
    "API_KEY", "AWS_ACCESS_KEY_ID", "JWT", "PRIVATE_KEY", "PASSWORD",
)
MIN_PROMPTS = 40            # per section
MIN_PROMPTS_PER_TYPE = 4
MIN_MULTI_TYPE = 15
MIN_MULTI_LINE = 5
MAX_LINES = 15
NATIONAL_REGIONS = ("US", "GB", "DE", "FR")
IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24}
KNOWN_BAD_SSNS = {"078-05-1120", "123-45-6789", "219-09-9999", "457-55-5462"}
KNOWN_EXAMPLE_KEYS = {"AKIAIOSFODNN7EXAMPLE"}

ID_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
EMAIL_RE = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}")
US_NATIONAL_RE = re.compile(r"\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{3}\.\d{3}\.\d{4}")
INTL_PHONE_RE = re.compile(r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5}))+")
SSN_RE = re.compile(r"(\d{3})([- .])(\d{2})\2(\d{4})")
SK_RE = re.compile(r"sk-(?:proj-)?([A-Za-z0-9_-]{32,48})")
GHP_RE = re.compile(r"ghp_([A-Za-z0-9]{36})")
AWS_RE = re.compile(r"AKIA[A-Z0-9]{16}")
B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN ((?:RSA |OPENSSH )?)PRIVATE KEY-----\n((?:[A-Za-z0-9+/=]+\n){2,})-----END \1PRIVATE KEY-----")
PASSWORD_RE = re.compile(r"[^\s@/:]{6,}")


class Problem(Exception):
    pass


def fail(where: str, message: str) -> None:
    raise Problem(f"{where}: {message}")


# --- format rules for listed values ---------------------------------------------------

def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_mod97_ok(compact: str) -> bool:
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ssn_rules_ok(area: str, group: str, serial: str) -> bool:
    return not (area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000")


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def looks_random(s: str) -> bool:
    return (len(set(s)) >= 12 and any(c.isdigit() for c in s)
            and any(c.isupper() for c in s) and any(c.islower() for c in s))


def check_email(v: str) -> str | None:
    if not EMAIL_RE.fullmatch(v):
        return "not an email address"
    return None


def check_phone(v: str) -> str | None:
    try:
        if v.startswith("+"):
            if not INTL_PHONE_RE.fullmatch(v):
                return "international number with unexpected characters"
            return None if phonenumbers.is_valid_number(phonenumbers.parse(v, None)) else "invalid per libphonenumber"
        if US_NATIONAL_RE.fullmatch(v):
            regions = ("US",)
        elif v.startswith("0") and re.fullmatch(r"0\d+(?:[ .-]\d+)*", v):
            regions = ("GB", "DE", "FR")
        else:
            return "national number neither US-style nor starting with 0"
        if not any(phonenumbers.is_valid_number(phonenumbers.parse(v, r)) for r in regions):
            return f"invalid per libphonenumber in {'/'.join(regions)}"
    except phonenumbers.NumberParseException as exc:
        return f"libphonenumber cannot parse it ({exc})"
    return None


def card_grouping_ok(v: str, digits: str) -> bool:
    if v == digits:
        return True
    seps = set(re.sub(r"\d", "", v))
    if len(seps) != 1 or seps - {" ", "-"}:
        return False
    groups = [len(g) for g in v.split(seps.pop())]
    if digits[:2] in ("34", "37"):
        return groups == [4, 6, 5]
    return all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4 or groups == [4, 4, 5]


def check_card(v: str) -> str | None:
    digits = re.sub(r"[ -]", "", v)
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return "not 13-19 digits with space/dash separators"
    if not card_grouping_ok(v, digits):
        return "unusual grouping or mixed separators"
    visa = digits[0] == "4" and len(digits) in (13, 16, 19)
    mastercard = len(digits) == 16 and ("51" <= digits[:2] <= "55" or 222100 <= int(digits[:6]) <= 272099)
    amex = digits[:2] in ("34", "37") and len(digits) == 15
    if not (visa or mastercard or amex):
        return "not a Visa/Mastercard/Amex number shape"
    return None if luhn_ok(digits) else "fails Luhn"


def check_iban(v: str) -> str | None:
    compact = v.replace(" ", "")
    if " " in v and not re.fullmatch(r"(?:[A-Z0-9]{4} )+[A-Z0-9]{1,4}", v):
        return "spaced IBAN not in groups of 4"
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", compact):
        return "not an IBAN shape"
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return f"country {compact[:2]} not one of {sorted(IBAN_LENGTHS)} or wrong length {len(compact)}"
    return None if iban_mod97_ok(compact) else "fails mod-97"


def check_ssn(v: str) -> str | None:
    m = SSN_RE.fullmatch(v)
    if not m:
        return "not NNN-NN-NNNN / NNN NN NNNN / NNN.NN.NNNN"
    if not ssn_rules_ok(m.group(1), m.group(3), m.group(4)):
        return "breaks SSA rules (000/666/9xx area, 00 group or 0000 serial)"
    if f"{m.group(1)}-{m.group(3)}-{m.group(4)}" in KNOWN_BAD_SSNS:
        return "a well-known invalid/published SSN"
    return None


def check_ip(v: str) -> str | None:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "not an IPv4/IPv6 address"
    return None


def check_api_key(v: str) -> str | None:
    m = SK_RE.fullmatch(v) or GHP_RE.fullmatch(v)
    if not m:
        return "neither sk-[proj-]<32-48 chars> nor ghp_<36 alphanumerics>"
    return None if looks_random(m.group(1)) else "does not look random"


def check_aws(v: str) -> str | None:
    if not AWS_RE.fullmatch(v):
        return "not AKIA + 16 uppercase letters/digits"
    if v in KNOWN_EXAMPLE_KEYS:
        return "the documentation example key"
    return None if len(set(v[4:])) >= 8 else "does not look random"


def check_jwt(v: str) -> str | None:
    parts = v.split(".")
    if len(parts) != 3 or not all(B64URL_RE.fullmatch(p) for p in parts) or not v.startswith("eyJ"):
        return "not three base64url segments starting with eyJ"
    try:
        header, payload = (json.loads(b64url_decode(p)) for p in parts[:2])
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        return "header/payload are not base64url JSON"
    if not isinstance(header, dict) or "alg" not in header or not isinstance(payload, dict) or not payload:
        return "header without alg or empty payload"
    return None if len(signature) >= 16 else "signature shorter than 16 bytes"


def check_private_key(v: str) -> str | None:
    m = PRIVATE_KEY_RE.fullmatch(v)
    if not m:
        return "not a whole BEGIN/END (RSA |OPENSSH )PRIVATE KEY block with base64 lines"
    try:
        body = base64.b64decode("".join(m.group(2).split()), validate=True)
    except binascii.Error:
        return "body is not valid base64"
    if m.group(1) == "OPENSSH " and not body.startswith(b"openssh-key-v1\0"):
        return "OPENSSH body does not start with openssh-key-v1"
    if m.group(1) != "OPENSSH " and body[:1] != b"\x30":
        return "DER body does not start with a SEQUENCE"
    return None


def check_password(v: str, text: str) -> str | None:
    if not PASSWORD_RE.fullmatch(v):
        return "password must be 6+ chars without @, /, : or whitespace"
    if not re.search(r"[a-z][a-z0-9+.-]*://[^\s:/@]*:" + re.escape(v) + r"@", text):
        return "not the password part of a scheme://user:password@host URL in the text"
    return None


VALUE_CHECKS = {
    "EMAIL_ADDRESS": check_email, "PHONE_NUMBER": check_phone, "CREDIT_CARD": check_card,
    "IBAN_CODE": check_iban, "US_SSN": check_ssn, "IP_ADDRESS": check_ip, "API_KEY": check_api_key,
    "AWS_ACCESS_KEY_ID": check_aws, "JWT": check_jwt, "PRIVATE_KEY": check_private_key,
}


# --- independent scanner: finds PII the corpus forgot to list (or put in a clean text) --

USERINFO_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@]*@")
SCAN_EMAIL_RE = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
SCAN_DIGIT_RUN_RE = re.compile(r"(?<![\w.,/-])\d+(?:[ -]\d+)*(?![\w]|[.,/]\d)")
SCAN_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
SCAN_SSN_RE = re.compile(r"(?<![\w.-])(\d{3})([- .])(\d{2})\2(\d{4})(?![\w]|[-.]\d)")
SCAN_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
SCAN_IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
SCAN_SECRET_RES = (
    ("API_KEY", re.compile(r"(?<![\w-])sk-(?:proj-)?[A-Za-z0-9_-]{20,}")),
    ("API_KEY", re.compile(r"(?<!\w)gh[pousr]_[A-Za-z0-9]{30,}")),
    ("AWS_ACCESS_KEY_ID", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("JWT", re.compile(r"(?<![\w-])eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")),
    ("PRIVATE_KEY", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----)?", re.S)),
)
SCAN_PASSWORD_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]*:([^\s@/]+)@")


def scan(text: str) -> list[tuple[str, int, int]]:
    """(type, start, end) of everything that looks like PII or a secret."""
    found: list[tuple[str, int, int]] = []
    userinfo = [m.span() for m in USERINFO_RE.finditer(text)]
    for m in SCAN_EMAIL_RE.finditer(text):
        if not any(s <= m.start() < e for s, e in userinfo):
            found.append(("EMAIL_ADDRESS", *m.span()))
    seen_phones = set()
    for region in NATIONAL_REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            raw = match.raw_string
            if not raw.startswith("+") and not (
                    US_NATIONAL_RE.fullmatch(raw) if region == "US" else raw.startswith("0")):
                continue  # national numbers count in the usual US shapes, elsewhere with a trunk 0
            span = (match.start, match.end)
            if span not in seen_phones:
                seen_phones.add(span)
                found.append(("PHONE_NUMBER", *span))
    for m in SCAN_DIGIT_RUN_RE.finditer(text):  # card numbers: any window of whole groups
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", m.group())]
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                s, e = m.start() + groups[i][0], m.start() + groups[j][1]
                digits = re.sub(r"\D", "", text[s:e])
                if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
                    found.append(("CREDIT_CARD", s, e))
    for m in SCAN_IBAN_RE.finditer(text):
        compact = m.group().replace(" ", "")
        for n in range(len(compact), 14, -1):  # the regex may have run into the next word
            if iban_mod97_ok(compact[:n]):
                end = m.start()
                for _ in range(n):  # map n compact characters back onto the text
                    end += 1
                    while text[end - 1] == " ":
                        end += 1
                found.append(("IBAN_CODE", m.start(), end))
                break
    for m in SCAN_SSN_RE.finditer(text):
        if ssn_rules_ok(m.group(1), m.group(3), m.group(4)):
            found.append(("US_SSN", *m.span()))
    for m in SCAN_IPV4_RE.finditer(text):
        if check_ip(m.group()) is None:
            found.append(("IP_ADDRESS", *m.span()))
    for m in SCAN_IPV6_RE.finditer(text):
        candidate = m.group()
        if sum(1 for g in candidate.split(":") if g) >= 3 and check_ip(candidate) is None:
            found.append(("IP_ADDRESS", *m.span()))
    for entity, pattern in SCAN_SECRET_RES:
        found.extend((entity, *m.span()) for m in pattern.finditer(text))
    found.extend(("PASSWORD", *m.span(1)) for m in SCAN_PASSWORD_RE.finditer(text))
    return found


def occurrences(text: str, value: str) -> list[tuple[int, int]]:
    spans, start = [], text.find(value)
    while start != -1:
        spans.append((start, start + len(value)))
        start = text.find(value, start + 1)
    return spans


# --- the corpus ----------------------------------------------------------------------

def check_text(where: str, entry: dict) -> str:
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        fail(where, "text is missing or empty")
    lines = text.rstrip("\n").split("\n")
    if len(lines) > MAX_LINES:
        fail(where, f"text has {len(lines)} lines, more than {MAX_LINES}")
    if "\t" in text or any(line != line.rstrip() for line in lines):
        fail(where, "text has tabs or trailing whitespace")
    return text


def check_with_pii(entry: dict, where: str, text: str) -> dict[str, list[str]]:
    values = entry.get("values")
    if not isinstance(values, dict) or not values:
        fail(where, "values must be a non-empty mapping of entity type to list")
    for entity, items in values.items():
        if entity not in TYPES:
            fail(where, f"unknown entity type {entity!r}")
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            fail(where, f"{entity}: values must be a non-empty list of non-empty strings")
        if len(set(items)) != len(items):
            fail(where, f"{entity}: duplicate value")
        for v in items:
            if v not in text:
                fail(where, f"{entity} value {v!r} does not occur verbatim in the text")
            problem = check_password(v, text) if entity == "PASSWORD" else VALUE_CHECKS[entity](v)
            if problem:
                fail(where, f"{entity} value {v!r}: {problem}")
            if entity != "PASSWORD":
                for s, e in occurrences(text, v):
                    before, after = text[s - 1:s], text[e:e + 1]
                    if re.fullmatch(r"[A-Za-z0-9]", before) or re.fullmatch(r"[A-Za-z0-9]", after):
                        fail(where, f"{entity} value {v!r} is glued to a neighbouring letter or digit")
    found = scan(text)
    for entity, items in values.items():
        for v in items:
            for s, e in occurrences(text, v):
                if not any(t == entity and fs <= s and e <= fe for t, fs, fe in found):
                    fail(where, f"{entity} value {v!r} is not recognisable as {entity} where it stands")
    listed = [(s, e) for items in values.values() for v in items for s, e in occurrences(text, v)]
    for entity, s, e in found:
        if not any(ls <= s and e <= le for ls, le in listed):
            fail(where, f"text holds an unlisted {entity}: {text[s:e]!r}")
    return values


def check_variety(pii_values: list[dict[str, list[str]]]) -> None:
    flat: dict[str, list[str]] = {t: [] for t in TYPES}
    for values in pii_values:
        for entity, items in values.items():
            flat[entity].extend(items)
    phones, cards, ibans, ssns = flat["PHONE_NUMBER"], flat["CREDIT_CARD"], flat["IBAN_CODE"], flat["US_SSN"]
    wanted = {
        "phone +CC with spaces": any(p.startswith("+") and " " in p for p in phones),
        "phone +CC with dashes": any(p.startswith("+") and "-" in p for p in phones),
        "phone +CC with dots": any(p.startswith("+") and "." in p for p in phones),
        "phone US (NNN) NNN-NNNN": any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", p) for p in phones),
        "phone US NNN-NNN-NNNN": any(re.fullmatch(r"\d{3}-\d{3}-\d{4}", p) for p in phones),
        "phone US NNN.NNN.NNNN": any(re.fullmatch(r"\d{3}\.\d{3}\.\d{4}", p) for p in phones),
        **{f"phone national 0... valid in {r}": any(
            p.startswith("0") and phonenumbers.is_valid_number(phonenumbers.parse(p, r)) for p in phones)
           for r in ("GB", "DE", "FR")},
        "card with spaces": any(" " in c for c in cards),
        "card with dashes": any("-" in c for c in cards),
        "card without separators": any(c.isdigit() for c in cards),
        "card Visa": any(c.startswith("4") for c in cards),
        "card Mastercard": any(c.startswith(("5", "2")) for c in cards),
        "card Amex 4-6-5": any(re.fullmatch(r"3[47]\d{2}([ -])\d{6}\1\d{5}", c) for c in cards),
        "IBAN spaced": any(" " in i for i in ibans),
        "IBAN compact": any(" " not in i for i in ibans),
        **{f"IBAN {cc}": any(i.startswith(cc) for i in ibans) for cc in IBAN_LENGTHS},
        **{f"SSN with {name}": any(SSN_RE.fullmatch(s).group(2) == sep for s in ssns)
           for name, sep in (("dashes", "-"), ("spaces", " "), ("dots", "."))},
        "IPv4": any(":" not in i for i in flat["IP_ADDRESS"]),
        "IPv6": any(":" in i for i in flat["IP_ADDRESS"]),
        "API key sk-": any(k.startswith("sk-") and not k.startswith("sk-proj-") for k in flat["API_KEY"]),
        "API key sk-proj-": any(k.startswith("sk-proj-") for k in flat["API_KEY"]),
        "API key ghp_": any(k.startswith("ghp_") for k in flat["API_KEY"]),
        "2+ private key kinds": len({k.split("\n")[0] for k in flat["PRIVATE_KEY"]}) >= 2,
    }
    missing = [name for name, ok in wanted.items() if not ok]
    if missing:
        fail("variety", "no value of kind: " + ", ".join(missing))


def main(path: Path) -> int:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or set(data) != {"with_pii", "clean"}:
            fail(str(path), "top level must have exactly with_pii and clean")
        ids: set[str] = set()
        prompts, value_counts, multi_type, multi_line = Counter(), Counter(), 0, 0
        pii_values = []
        for section in ("with_pii", "clean"):
            entries = data[section]
            if not isinstance(entries, list) or len(entries) < MIN_PROMPTS:
                fail(section, f"needs a list of at least {MIN_PROMPTS} prompts")
            for n, entry in enumerate(entries):
                where = f"{section}[{n}]"
                if not isinstance(entry, dict):
                    fail(where, "entry must be a mapping")
                pid = entry.get("id")
                if not isinstance(pid, str) or not ID_RE.fullmatch(pid) or len(pid) > 40:
                    fail(where, f"id {pid!r} is not short kebab-case")
                if pid in ids:
                    fail(where, f"duplicate id {pid!r}")
                ids.add(pid)
                where = f"{section}/{pid}"
                expected = {"id", "text", "values"} if section == "with_pii" else {"id", "text"}
                if set(entry) != expected:
                    fail(where, f"keys must be {sorted(expected)}, got {sorted(entry)}")
                text = check_text(where, entry)
                if section == "clean":
                    if len(re.findall(r"\d+", text)) < 3:
                        fail(where, "a clean prompt should be full of numbers (3+)")
                    for entity, s, e in scan(text):
                        fail(where, f"clean text holds {entity}: {text[s:e]!r}")
                    continue
                values = check_with_pii(entry, where, text)
                pii_values.append(values)
                for entity, items in values.items():
                    prompts[entity] += 1
                    value_counts[entity] += len(items)
                multi_type += len(values) > 1
                multi_line += "\n" in text.rstrip("\n")
        for entity in TYPES:
            if prompts[entity] < MIN_PROMPTS_PER_TYPE:
                fail("counts", f"{entity} appears in {prompts[entity]} prompts, needs {MIN_PROMPTS_PER_TYPE}")
        if multi_type < MIN_MULTI_TYPE:
            fail("counts", f"{multi_type} prompts hold several entity types, needs {MIN_MULTI_TYPE}")
        if multi_line < MIN_MULTI_LINE:
            fail("counts", f"{multi_line} with_pii prompts are multi-line, needs {MIN_MULTI_LINE}")
        check_variety(pii_values)
    except Problem as problem:
        print(f"PROBLEM {problem}")
        return 1
    except (OSError, yaml.YAMLError) as exc:
        print(f"PROBLEM cannot read {path}: {exc}")
        return 1

    print(f"{'entity type':<20}{'prompts':>8}{'values':>8}")
    for entity in TYPES:
        print(f"{entity:<20}{prompts[entity]:>8}{value_counts[entity]:>8}")
    print(f"{'total':<20}{'':>8}{sum(value_counts.values()):>8}")
    print(f"with_pii prompts: {len(data['with_pii'])} ({multi_type} with several types, {multi_line} multi-line)")
    print(f"clean prompts:    {len(data['clean'])}")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH))
