"""PII pieces on their own: restoring split placeholders, what is scanned, policy validation."""

from __future__ import annotations

import asyncio
import itertools
import random

import orjson
import pytest

from wrapper.auth import Principal
from wrapper.config import PII_ENTITIES, ConfigError, Mode, Role, Tenant, validate_config
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.pii import PiiScanner, PiiStep, Restorer
from wrapper.pipeline import StepResult
from wrapper.routes.chat import ChatRoute

ORIGINALS = {"<EMAIL_ADDRESS_1>": "jane.doe@example.com", "<PHONE_NUMBER_1>": "+44 20 7946 0958",
             "<EMAIL_ADDRESS_12>": "ops@example.net"}
ANSWER = "Write to <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_12>, call <PHONE_NUMBER_1>; a < b and <b>bold</b> stay <EMAIL_ADDRESS_9>."
RESTORED = ("Write to jane.doe@example.com or ops@example.net, call +44 20 7946 0958; "
            "a < b and <b>bold</b> stay <EMAIL_ADDRESS_9>.")


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    return PiiScanner()


def event(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


def streamed(pieces: list[str], finish_event: bool = True) -> tuple[str, list[str]]:
    """The text a client reads from these pieces, and what was held back after each one."""
    restoring = Restorer(ORIGINALS, ChatRoute())
    out, held = [], []
    events = [event(p) for p in pieces] + ([event(None, "stop")] if finish_event else []) + [b"data: [DONE]\n\n"]
    for raw in events:
        sent = (restoring.end() if raw.startswith(b"data: [DONE]") else b"") + restoring.event(raw)  # as forward does
        for line in sent.split(b"\n\n"):
            if line.startswith(b"data: {"):
                out.extend(c["delta"].get("content") or "" for c in orjson.loads(line[6:])["choices"])
        held.append("".join(restoring.held.values()))
    return "".join(out), held


def test_a_whole_answer_gets_its_values_back_and_unknown_placeholders_stay():
    answer = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]})
    assert orjson.loads(Restorer(ORIGINALS, ChatRoute()).answer(answer))["choices"][0]["message"]["content"] == RESTORED


@pytest.mark.parametrize("finish_event", [True, False])
def test_a_stream_split_at_every_position_reads_as_the_restored_text(finish_event):
    for cut in range(1, len(ANSWER)):
        assert streamed([ANSWER[:cut], ANSWER[cut:]], finish_event)[0] == RESTORED, cut
    for pieces in ([ANSWER[i:i + 1] for i in range(len(ANSWER))], [ANSWER[i:i + 3] for i in range(0, len(ANSWER), 3)]):
        assert streamed(pieces, finish_event)[0] == RESTORED
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(ANSWER)), rng.randint(1, 12)))
        pieces = [ANSWER[a:b] for a, b in itertools.pairwise([0, *cuts, len(ANSWER)])]
        assert streamed(pieces, finish_event)[0] == RESTORED


def test_only_a_possible_placeholder_is_held_back():
    prefixes = {p[:i] for p in ORIGINALS for i in range(1, len(p))}
    _, held = streamed([ANSWER[i:i + 1] for i in range(len(ANSWER))])
    assert all(h == "" or h in prefixes for h in held)
    # Text that cannot become a placeholder flows at once, a lone "<" included only until the next piece.
    restoring = Restorer(ORIGINALS, ChatRoute())
    restoring.event(event("a <"))
    assert restoring.held == {(0, "content"): "<"}
    restoring.event(event("b> and <EMAIL_X"))
    assert restoring.held == {}


def tool_call_body() -> dict:
    return {"model": "m", "messages": [
        {"role": "system", "content": "Escalate to boss@example.com"},
        {"role": "user", "content": [{"type": "text", "text": "my mail is me@example.org"}, {"type": "image_url"}]},
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"to": "me@example.org"}'}}]},
        {"role": "tool", "content": "sent to me@example.org"},
    ]}


def context(endpoint: str | None = None, **pii) -> RequestContext:
    ctx = RequestContext("unit")
    ctx.tenant = Tenant(pii=pii, endpoints=["e"])
    ctx.principal = Principal("t", None, endpoint, frozenset({Role.app}), "key:unit")
    ctx.policy, ctx.route = ctx.tenant.policy(endpoint), ChatRoute()
    return ctx


def protect(ctx: RequestContext, body: dict, scanner: PiiScanner) -> StepResult:
    """The PII step's request half, as the pipeline runs it in enforce mode."""
    ctx.body = body
    return asyncio.run(PiiStep(scanner).request(ctx))


def test_pseudonyms_are_consistent_within_a_request_and_system_prompts_follow_the_policy(scanner):
    body = tool_call_body()
    result = protect(context(mode="pseudonymize"), body, scanner)
    text = orjson.dumps(body).decode()
    assert "example.org" not in text and "boss@" not in text
    assert text.count("<EMAIL_ADDRESS_1>") == 1 and text.count("<EMAIL_ADDRESS_2>") == 3  # the same value, one name
    assert result.half.originals == {"<EMAIL_ADDRESS_1>": "boss@example.com", "<EMAIL_ADDRESS_2>": "me@example.org"}
    assert (result.decision, result.detail) == ("pseudonymize", {"found": {"EMAIL_ADDRESS": 4}})
    body = tool_call_body()
    ctx = context(mode="redact", system_prompts=False)
    assert protect(ctx, body, scanner).half is None  # nothing to restore after redaction
    assert body["messages"][0]["content"] == "Escalate to boss@example.com"
    assert body["messages"][3]["content"] == "sent to <EMAIL_ADDRESS>"
    assert ctx.pii == {"action": "redact", "found": {"EMAIL_ADDRESS": 3}}


def test_the_endpoint_policy_overrides_the_tenants_and_block_refuses_naming_types_only(scanner):
    assert PiiStep(scanner).mode(context(mode="off", endpoints={"e": "block"})) is Mode.off
    ctx = context("e", mode="off", endpoints={"e": "block"})
    assert PiiStep(scanner).mode(ctx) is Mode.enforce
    result = protect(ctx, tool_call_body(), scanner)
    assert result.decision == "block" and result.refusal.status == 400
    assert "EMAIL_ADDRESS" in result.refusal.message and "example" not in result.refusal.message


def test_a_failing_detector_fails_closed_unless_the_tenant_chose_open(scanner, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("detector down")

    monkeypatch.setattr(scanner, "find", broken)
    body = tool_call_body()
    with pytest.raises(GatewayError) as refused:
        protect(context(mode="redact"), body, scanner)
    assert refused.value.status == 503 and refused.value.code == "pii_unavailable"
    ctx = context(mode="redact", on_failure="open")
    assert protect(ctx, body, scanner).decision == "unscanned"
    assert ctx.pii == {"action": "redact", "unscanned": True}


def test_the_scanner_knows_exactly_the_documented_types(scanner):
    assert scanner.built_in_entities == set(PII_ENTITIES)


@pytest.mark.parametrize(("pii", "complaint"), [
    ({"mode": "mask"}, "mode"),
    ({"action": "mask"}, "action"),
    ({"entities": ["EMAIL", "PHONE_NUMBER"]}, "unknown PII entity types ['EMAIL']"),
    ({"recognizers": [{"entity": "EMPLOYEE_ID", "patterns": ["EMP-(\\d{6}"]}]}, "not a valid regular expression"),
    ({"recognizers": [{"entity": "employee id", "patterns": ["x"]}]}, "entity"),
    ({"endpoints": {"elsewhere": "block"}}, "an endpoint the tenant does not have: 'elsewhere'"),
])
def test_a_bad_pii_policy_is_refused_with_a_clear_message(pii, complaint):
    with pytest.raises(ConfigError) as refused:
        validate_config({"tenants": {"acme": {"endpoints": ["support"], "pii": pii}}}, "gateway.yaml")
    assert complaint in str(refused.value)


@pytest.mark.parametrize(("text", "phones"), [
    ("Order 12345 415-555-0132 today", ["415-555-0132"]),
    ("On 2024-05-06 415-555-0132 called", ["415-555-0132"]),
    ("call 415-555-0132 12 times", ["415-555-0132"]),
    ("Ring 020 7946 0958 or +1 415 555 2671.", ["020 7946 0958", "+1 415 555 2671"]),
    ("at 10:20 on 06.05.2024 10 +49 30 901820", ["+49 30 901820"]),
    ("rows 2024-03-31 23 and 2024-05-0193, build 20240506.1, order 123456789, v3.11.7", []),
])
def test_phone_numbers_are_told_from_dates_and_ids_beside_them(scanner, text, phones):
    assert [text[r.start:r.end] for r in sorted(scanner.find(text, None, ()), key=lambda r: r.start)] == phones


def test_overlapping_findings_become_one_replacement(scanner):
    body = {"model": "m", "messages": [{"role": "user", "content": "IBAN DE89 3704 0044 0532 0130 00 please"}]}
    ctx = context(mode="pseudonymize")
    protect(ctx, body, scanner)
    assert body["messages"][0]["content"] == "IBAN <IBAN_CODE_1> please"
    assert ctx.pii["found"] == {"IBAN_CODE": 1}  # not also a phone number inside it


def test_the_test_corpus_keeps_its_own_rules():
    """Valid checksums, real phone numbers, every value listed: see tests/data/check_corpus.py."""
    import subprocess
    import sys
    from pathlib import Path

    checker = Path(__file__).parents[1] / "data" / "check_corpus.py"
    result = subprocess.run([sys.executable, str(checker)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("OK"), result.stdout + result.stderr


def test_names_and_places_are_found_when_a_spacy_pipeline_is_configured(tmp_path):
    """A rule-based English pipeline stands in for a trained one (nothing here may download a model)."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Jane Doe"},
                                                {"label": "GPE", "pattern": "Springfield"}])
    nlp.to_disk(tmp_path / "ner")
    ner_scanner = PiiScanner(str(tmp_path / "ner"))
    body = {"model": "m", "messages": [{"role": "user", "content": "Jane Doe moved to Springfield, jane@example.com"}]}
    ctx = context(mode="redact")
    protect(ctx, body, ner_scanner)
    assert body["messages"][0]["content"] == "<PERSON> moved to <LOCATION>, <EMAIL_ADDRESS>"
    assert ctx.pii["found"] == {"EMAIL_ADDRESS": 1, "LOCATION": 1, "PERSON": 1}


def test_a_missing_ner_pipeline_stops_the_start_with_a_clear_message_and_downloads_nothing():
    from wrapper.pii.scanner import PiiSetupError

    with pytest.raises(PiiSetupError, match="en_core_web_sm.*neither an installed spaCy pipeline"):
        PiiScanner("en_core_web_sm")
