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


def _loads(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def fed(pieces: list[str]) -> JsonPrefix:
    checker = JsonPrefix()
    for piece in pieces:
        assert checker.feed(piece), (pieces, checker.failed_at)
    return checker


@settings(max_examples=300, deadline=None)
@given(VALUES, st.sampled_from([None, 2]), st.data())
def test_valid_json_cut_anywhere_is_a_prefix_all_along_and_complete_only_at_its_end(value, indent, data):
    text = json.dumps(value, indent=indent, ensure_ascii=data.draw(st.booleans()))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    checker = JsonPrefix()
    for index, piece in enumerate(pieces):
        assert checker.feed(piece), (text, pieces)
        assert checker.complete() == _loads(text[:sum(map(len, pieces[:index + 1]))]), (text, pieces)
    assert checker.complete() and fed([text, "  \n"]).complete()


@pytest.mark.parametrize(("text", "at"), [('{"a": 1,}', 8), ('{"a" 1}', 5), ("[01]", 2), ('"abc\x01"', 4),
                                          ("{'a': 1}", 1), ("truth", 3), ("{} {}", 3), ("[1,]", 3), ("NaN", 0),
                                          ("[1 2]", 3), ('{"a":1}x', 7), ("// note\n{}", 0), ("[-]", 2)])
def test_invalid_json_fails_at_its_first_bad_character(text, at):
    checker = JsonPrefix()
    assert checker.feed(text) is False and checker.failed_at == at
    assert checker.feed("{}") is False and not checker.complete()  # stays failed


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='{}[]:,"\\ 0123456789-+.eEtrufalsn', max_size=14))
def test_it_agrees_with_json_loads(text):
    checker = JsonPrefix()
    accepted = checker.feed(text)
    valid = _loads(text)
    if valid:
        assert accepted and checker.complete(), text
    if checker.complete():
        assert valid, text


def test_hostile_depth_and_length_stay_bounded():
    deep = JsonPrefix()
    assert deep.feed("[" * 10_000) is False and deep.failed_at == MAX_DEPTH
    long = JsonPrefix()
    for _ in range(100_000):  # a 1 MB string value, ten characters at a time: linear, not quadratic
        long.feed('"aaaaaaaaa' if long.read == 0 else "aaaaaaaaaa")
    assert long.feed('"') and long.complete()
