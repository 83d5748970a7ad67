"""Output checks on a stream: a banned term split anywhere across pieces never reaches the client, and text that
matches nothing is released with at most the documented hold-back."""

from __future__ import annotations

import random

import pytest

from wrapper.config.guardrails import GuardrailCheck
from wrapper.guardrails.checks import Secrets, TermList
from wrapper.guardrails.normalise import fold
from wrapper.guardrails.scanner import TextScanner

TERMS = ("project falcon", "ban", "kill switch", "zero-day", "café noir", "c++ secret", "ＡＰＩ leak")
TEXT = "The {} was mentioned in the weekly review, then the call moved on to the budget for next year."


def scanner(action: str = "block", terms: tuple[str, ...] = TERMS) -> TextScanner:
    return TextScanner([TermList(GuardrailCheck(check="banned_terms", terms=terms, action=action))])


def stream(scan: TextScanner, pieces: list[str]) -> tuple[str, list[int], object]:
    """What the client gets, how much was held after each piece, and the block if any."""
    out, held = [], []
    came = 0
    for index, piece in enumerate(pieces):
        fed = scan.feed(piece, final=index == len(pieces) - 1)
        out.append(fed.released)
        came += len(piece)
        held.append(came - len("".join(out)))
        if fed.blocked is not None:
            return "".join(out), held, fed.blocked
    return "".join(out), held, None


def splits(text: str, parts: int):
    """Every way to cut the text around its term into `parts` pieces (cuts near the term, where leaks happen)."""
    positions = range(1, len(text))
    if parts == 2:
        for cut in positions:
            yield [text[:cut], text[cut:]]
    else:
        for first in positions:
            for second in range(first + 1, min(len(text), first + 24)):
                yield [text[:first], text[first:second], text[second:]]


@pytest.mark.parametrize("term", TERMS)
@pytest.mark.parametrize("parts", (2, 3))
def test_a_term_split_at_every_offset_never_reaches_the_client(term, parts):
    text = TEXT.format(term.upper() if parts == 3 else term)
    start = text.find(term.upper() if parts == 3 else term)
    window = text[max(0, start - 30):start + len(term) + 30]  # cuts around the term
    checked = 0
    for pieces in splits(window, parts):
        released, _, blocked = stream(scanner(), pieces)
        assert blocked is not None, pieces
        assert fold(term.split()[0]) not in fold(released), (pieces, released)  # not even its first word
        assert released == window[:window.lower().find(term.lower()[:3])][:len(released)]  # a clean prefix
        checked += 1
    assert checked >= len(window) - 1  # every offset


def test_redacted_terms_are_masked_whatever_the_split_and_the_rest_is_released_unchanged():
    text = "Ask about Project  Falcon, not the bank; a ban on zero-day talk, bannister fine, Café Noir or cafe noir."
    expected = ("Ask about [REDACTED], not the bank; a [REDACTED] on [REDACTED] talk, bannister fine, [REDACTED] "
                "or [REDACTED].")
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        released, held, _ = stream(scanner("redact"), pieces)
        assert released == expected, pieces


def test_text_that_matches_nothing_is_held_back_at_most_the_longest_term():
    scan = scanner("block")
    limit = scan.hold  # documented: the longest term (and its gaps) + 1
    assert limit <= 64 + 7 * 2 + 1
    text = "Nothing here is banned at all, it only talks about budgets and banks and bananas. " * 4
    released, held, blocked = stream(scan, [text[i:i + 3] for i in range(0, len(text), 3)])
    assert blocked is None and released == text
    assert max(held[:-1]) <= limit and held[-1] == 0


def test_unicode_tricks_do_not_hide_a_term():
    for disguised in ("ＰＲＯＪＥＣＴ ＦＡＬＣＯＮ", "project\u200b falcon", "Pröject Falcón", "PROJECT\n\tFALCON"):
        released, _, blocked = stream(scanner(), [f"See {disguised} now."])
        assert blocked is not None and released == "See ", disguised


def test_a_secret_is_masked_however_long_it_runs_and_wherever_it_is_cut():
    key = "sk-proj-" + "Ab3" * 40
    text = f"Use {key} in the header, and AKIAABCDEFGHIJKLMNOP for S3."
    check = Secrets(GuardrailCheck(check="secrets", action="redact"))
    for size in (1, 2, 5, 13, 64, 1000):
        scan = TextScanner([check])
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        released, held, _ = stream(scan, pieces)
        assert released == "Use [API_KEY] in the header, and [AWS_ACCESS_KEY_ID] for S3.", size
        assert "Ab3" not in released


def test_a_list_of_a_thousand_terms_is_one_automaton_and_finds_each():
    words = [f"codeword{n:04d}" for n in range(1000)]
    scan = TextScanner([TermList(GuardrailCheck(check="banned_terms", terms=tuple(words), action="redact"))])
    fed = scan.feed("say codeword0999 and codeword0000, not codeword10000", final=True)
    assert fed.released == "say [REDACTED] and [REDACTED], not codeword10000"


def test_with_only_shadow_checks_every_event_and_answer_passes_as_the_very_bytes_that_came():
    import orjson

    from wrapper.config.guardrails import GuardrailsPolicy
    from wrapper.guardrails.output import OutputHalf
    from wrapper.guardrails.stack import Findings, compiled
    from wrapper.routes.chat import ChatRoute

    policy = GuardrailsPolicy.model_validate({"mode": "shadow", "output": [
        {"check": "banned_terms", "terms": ["project falcon"]}, {"check": "secrets", "action": "redact"}]})

    class Ctx:
        route, guardrails, record_mask = ChatRoute(), [], None

    half = OutputHalf(compiled(policy), Ctx(), Findings(Ctx.guardrails), None)
    events = [b'data: {"choices":[{"index":0,"delta":{"content":"' + piece.encode() + b'"},"finish_reason":null}]}\n\n'
              for piece in ("Key sk-proj-", "ABCDEFGHIJKLMNOPQRSTUVWX", " then Project Fal", "con")]
    events.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    for event in events:
        assert half.event(event) is event
    assert half.end() == b"" and half.ended is None
    body = orjson.dumps({"choices": [{"index": 0, "message": {"content": "Project Falcon"}}]})
    assert OutputHalf(compiled(policy), Ctx(), Findings([]), None).answer(body) is body
    # what enforce would do is recorded: the secret it would mask, then the term it would end the answer at
    assert [(e["check"], e["mode"], e["action"]) for e in Ctx.guardrails] == [
        ("secrets", "shadow", "redact"), ("banned_terms", "shadow", "block")]
