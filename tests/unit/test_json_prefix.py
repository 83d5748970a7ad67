"""The streamed-JSON check: every prefix of valid JSON passes, however it is cut, and invalid JSON fails at its
first bad character, which is where the gateway ends a stream asked for as JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapper.guardrails.json_prefix import MAX_DEPTH, JsonPrefix

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


def _refuse(constant: str) -> None:
    raise ValueError(constant)  # json.loads takes NaN and Infinity by default; RFC 8259 does not


def _loads(text: str) -> bool:
    try:
        json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return False
    return True


def _cut(text: str, cuts: list[int]) -> list[str]:
    cuts = sorted(cuts)
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def fed(pieces: list[str]) -> JsonPrefix:
    checker = JsonPrefix()
    for piece in pieces:
        assert checker.feed(piece), (pieces, checker.failed_at)
    return checker


@settings(max_examples=300, deadline=None)
@given(VALUES, st.sampled_from([None, 2]), st.data())
def test_valid_json_cut_anywhere_is_a_prefix_all_along_and_complete_only_at_its_end(value, indent, data):
    text = json.dumps(value, indent=indent, ensure_ascii=data.draw(st.booleans()))
    pieces = _cut(text, data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    checker = JsonPrefix()
    for index, piece in enumerate(pieces):
        assert checker.feed(piece), (text, pieces)
        # complete exactly when the text so far parses: for `12` or `-3.5` that is also partway, for the rest
        # only at the end
        assert checker.complete() == _loads(text[:sum(map(len, pieces[:index + 1]))]), (text, pieces)
    assert checker.complete() and checker.failed_at is None
    assert fed([text, " \t\r\n"]).complete()  # whitespace may follow the value


@pytest.mark.parametrize(("text", "complete"), [
    ("", False), (" \n\t", False), ("12", True), ("12.", False), ("1e", False), ("1e+", False), ("-", False),
    ("0", True), ("-0", True), ("1.5E-3", True), ("tru", False), ("null", True), ('"a', False), ('"a\\', False),
    ('"\\u12', False), ('"\\u12aF"', True), ("[1", False), ("[]", True), ('{"a"', False), ('{"a":{}} ', True)])
def test_a_valid_prefix_is_complete_only_as_a_whole_value(text, complete):
    checker = JsonPrefix()
    assert checker.feed(text) and checker.failed_at is None
    assert checker.complete() is complete


@pytest.mark.parametrize(("text", "at"), [
    ('{"a": 1,}', 8), ('{"a" 1}', 5), ("[01]", 2), ('"abc\x01"', 4), ("{'a': 1}", 1), ("{} {}", 3), ("[1,]", 3),
    ("[1 2]", 3), ('{"a":1}x', 7), ("trueh", 4)])
def test_invalid_json_fails_where_json_loads_says(text, at):
    checker = JsonPrefix()
    assert checker.feed(text) is False and checker.failed_at == at
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(text)
    assert error.value.pos == at


@pytest.mark.parametrize(("text", "at"), [
    ("truth", 3),  # t-r-u-t: the second `t` is where it stops being `true` (json.loads names the start, 0)
    ("NaN", 0), ("Infinity", 0), ("-Infinity", 1), ("// note\n{}", 0), ("/* c */ 1", 0), ("[-]", 2),
    ("[1.]", 3), ("1.e5", 2), ('"\\x"', 2), ('"\\u12G"', 5), ("[1}", 2), ('{"a":1]', 6), ("{1:2}", 1),
    ('{"a":}', 5), ("]", 0), ("[,1]", 1), ("+1", 0), (".5", 0), ("0x1F", 1), ('"a\nb"', 2), ("'a'", 0)])
def test_invalid_json_fails_at_its_first_bad_character(text, at):
    checker = JsonPrefix()
    assert checker.feed(text) is False and checker.failed_at == at
    assert checker.feed("{}") is False and checker.failed_at == at and not checker.complete()  # stays failed
    piecewise = JsonPrefix()  # the same character, however the text came
    assert [piecewise.feed(char) for char in text[:at + 1]] == [True] * at + [False]
    assert piecewise.failed_at == at


def test_every_control_character_must_be_escaped_inside_a_string():
    for code in range(0x20):
        checker = JsonPrefix()
        assert checker.feed('["ab' + chr(code)) is False and checker.failed_at == 4, code
        assert fed([json.dumps(chr(code))]).complete(), code  # escaped, as json.dumps writes it
    assert fed(['"\x7f\u2028\U0001f600"']).complete()  # DEL and beyond are plain characters


ALPHABET = '{}[]:,"\\ \t\n\r0123456789-+.eEtrufalsn'


@st.composite
def _near_json(draw) -> str:
    """A valid document with one character inserted, deleted or replaced: mostly invalid, but only just."""
    text = json.dumps(draw(VALUES), indent=draw(st.sampled_from([None, 1])))
    at = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from(ALPHABET))
    before, after = text[:at], text[at + 1:]
    return draw(st.sampled_from([before + char + text[at:], before + after, before + char + after]))  # in, out, swap


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=14) | _near_json(), st.data())
def test_it_agrees_with_json_loads(text, data):
    whole = JsonPrefix()
    accepted = whole.feed(text)
    if _loads(text):
        assert accepted and whole.complete(), text
        assert all(fed([text[:end]]) for end in range(len(text)))  # and every prefix of it on its own
    if whole.complete():
        assert _loads(text), text
    # how the text is cut changes nothing
    split = JsonPrefix()
    for piece in _cut(text, data.draw(st.lists(st.integers(0, len(text)), max_size=4))):
        split.feed(piece)
    assert (split.failed_at, split.complete(), split.depth) == (whole.failed_at, whole.complete(), whole.depth)


def test_depth_follows_the_open_containers():
    checker = JsonPrefix()
    depths = []
    for char in '{"a": [1, {"b": []}], "c": 2}':
        checker.feed(char)
        depths.append(checker.depth)
    assert max(depths) == 4 and depths[-1] == 0 and checker.complete()


def test_hostile_depth_fails_at_the_129th_level_without_recursion():
    deep = JsonPrefix()
    assert deep.feed("[" * 10_000) is False
    assert deep.failed_at == MAX_DEPTH == 128 and deep.depth == MAX_DEPTH  # the 129th `[` is the bad one
    assert fed(["[" * MAX_DEPTH + "]" * MAX_DEPTH]).complete()  # 128 levels are fine


def test_a_1_mb_string_fed_a_character_at_a_time_is_linear():
    long = JsonPrefix()
    assert long.feed('"')
    for _ in range(1_000_000):  # quadratic work here would run for hours, not seconds
        long.feed("a")
    assert not long.complete()
    assert long.feed('"') and long.complete()
