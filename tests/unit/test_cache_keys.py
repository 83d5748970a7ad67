"""What makes two requests share a cache entry (wrapper/cache/keys.py, semantic.py): slots, normalisation, scope."""

from __future__ import annotations

import pytest

from wrapper.cache import keys
from wrapper.cache.semantic import cues, readable
from wrapper.cache.step import semantic_view
from wrapper.config.models import Mode

SECRET = b"k"
SCOPE = keys.scope_of("acme", "support", "chat", "fake-chat", False)


def chat(text: str, **extra) -> dict:
    return {"model": "fake-chat", "temperature": 0, "messages": [{"role": "user", "content": text}], **extra}


def same_template(a: str, b: str) -> bool:
    return keys.template_digest(SECRET, SCOPE, "chat", chat(a)) == keys.template_digest(SECRET, SCOPE, "chat", chat(b))


@pytest.mark.parametrize(("text", "template", "values"), [
    ("Refund order #48213 for $25.50 on 2024-05-01", "refund order \x00id\x00 for \x00money\x00 on \x00date\x00",
     ["#48213", "$25.50", "2024-05-01"]),
    ("Email ops@example.com about https://x.io/a?b=1 by 5pm", "email \x00email\x00 about \x00url\x00 by \x00time\x00",
     ["ops@example.com", "https://x.io/a?b=1", "5pm"]),
    ('Translate "good morning" into FR for user ab12cd', 'translate \x00quote\x00 into \x00acro\x00 for user \x00id\x00',
     ["FR", '"good morning"', "ab12cd"]),
    ("Give me 3 ideas, about 12.5% growth!", "give me \x00num\x00 ideas, about \x00num\x00 growth", ["3", "12.5%"]),
])
def test_slots_are_typed_placeholders_and_their_values_kept_exactly(text, template, values):
    assert keys.template(text) == (template, values)


def test_spacing_case_and_end_punctuation_share_a_template_any_other_difference_does_not():
    assert same_template("Refund order #48213, please.", "refund   order #48213, Please")
    # a word in capitals is kept exactly (it may be an acronym): stricter, never a false hit
    assert not same_template("Refund order #48213, please.", "Refund order #48213, PLEASE")
    assert not same_template("Refund order #48213", "Refund order #48214")
    assert not same_template("Enable 2FA for my account", "Disable 2FA for my account")
    assert not same_template("Is the US office open?", "Is the us office open?")  # an acronym is a value
    assert not same_template("Book 3 nights in Paris", "Book 3 nights in Rome")
    assert not same_template("Book 3 nights", "Book 4 nights")


def test_every_field_that_changes_the_answer_is_in_the_key_and_delivery_fields_are_not():
    base = keys.exact_digest(SECRET, SCOPE, chat("hi"))
    for changed in (chat("hi", temperature=0.5), chat("hi", max_tokens=5), chat("hi", tools=[{"type": "function"}]),
                    {**chat("hi"), "messages": [{"role": "system", "content": "be terse"},
                                                {"role": "user", "content": "hi"}]}):
        assert keys.exact_digest(SECRET, SCOPE, changed) != base
    for same in (chat("hi", user="u1"), chat("hi", stream_options={"include_usage": True}),
                 chat("hi", metadata={"a": 1})):
        assert keys.exact_digest(SECRET, SCOPE, same) == base
    for scope in (keys.scope_of("globex", "support", "chat", "fake-chat", False),
                  keys.scope_of("acme", "other", "chat", "fake-chat", False),
                  keys.scope_of("acme", "support", "chat", "fake-max", False),
                  keys.scope_of("acme", "support", "chat", "fake-chat", True)):
        assert keys.exact_digest(SECRET, scope, chat("hi")) != base
        assert keys.template_digest(SECRET, scope, "chat", chat("hi")) != keys.template_digest(SECRET, SCOPE, "chat",
                                                                                                chat("hi"))
    assert keys.exact_digest(b"another gateway", SCOPE, chat("hi")) != base  # keyed: not guessable


def test_a_semantic_bucket_holds_only_questions_with_the_same_values_cues_names_and_context():
    def bucket(text: str, **extra) -> str:
        return semantic_view(SECRET, "chat", chat(text, **extra), SCOPE, "acme", Mode.enforce).bucket

    assert bucket("How do I reset my password?") == bucket("What's the way to reset my password?")
    assert bucket("Refund order #48213") != bucket("Refund order #48214")
    assert bucket("Enable 2FA for my account") != bucket("Disable 2FA for my account")
    assert bucket("Can I get a refund?") != bucket("Can't I get a refund?")
    assert bucket("What is the capital of France?") != bucket("What is the capital of Spain?")
    system = [{"role": "system", "content": "You answer for the Paris office."}]
    assert bucket("Opening hours?") != bucket("Opening hours?", messages=system + chat("Opening hours?")["messages"])
    assert cues("Please don't enable it before Monday, Maria") == ["before", "don't", "enable", "Maria", "Monday"]
    assert readable(keys.template("Refund order #48213")[0]) == "refund order [id]"
