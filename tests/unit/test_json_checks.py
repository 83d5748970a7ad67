"""The `json` output check reads a schema the client wrote: a hostile one must cost little and fetch nothing."""

from __future__ import annotations

import pytest

from wrapper.guardrails.json_checks import JsonFollower, wants_json


def judged(schema: dict | None, text: str) -> list[str]:
    follower = JsonFollower({} if schema is None else {"schema": schema})
    follower.feed(text)
    return [finding.type for finding in follower.at_end()]


def test_what_the_request_asks_for_decides_the_check():
    assert wants_json({"response_format": {"type": "json_object"}}) == {}
    schema = {"type": "object"}
    assert wants_json({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}) == \
        {"schema": schema}
    assert wants_json({"text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}}) == {"schema": schema}
    assert wants_json({"response_format": {"type": "text"}}) is None and wants_json({}) is None


def test_an_answer_is_judged_against_the_schema():
    schema = {"type": "object", "required": ["order"], "properties": {"order": {"type": "integer"}}}
    assert judged(schema, '{"order": 48213}') == []
    assert judged(schema, '{"order": "48213"}') == ["schema_violation"]
    assert judged(schema, '{"order": 4') == ["incomplete_json"]
    assert judged(None, "[1, 2]") == []


@pytest.mark.timeout(30)
def test_a_catastrophic_pattern_is_cut_short():
    schema = {"type": "string", "pattern": "^(a+)+$"}
    assert judged(schema, '"' + "a" * 40 + '!"') == ["schema_violation"]  # the pattern's time limit, not 2^40 steps


def test_a_remote_reference_is_never_fetched_and_a_broken_schema_is_said_so():
    assert judged({"$ref": "http://169.254.169.254/latest/meta-data"}, "{}") == ["schema_unusable"]
    assert judged({"type": 12}, "{}") == ["schema_unusable"]
