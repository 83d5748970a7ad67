"""What makes two requests share a cache entry (wrapper/cache/keys.py, semantic.py, meaning.py): slots,
normalisation, scope, and what tells two similar questions apart."""

from __future__ import annotations

import pytest

from wrapper.cache import keys
from wrapper.cache.meaning import differs
from wrapper.cache.semantic import readable
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
    ("Is key XJ42-P9QL-77A1 on api.example.com, v2.3.1?",
     "is key \x00id\x00 on \x00host\x00, \x00id\x00", ["XJ42-P9QL-77A1", "api.example.com", "v2.3.1"]),
    ("Lot B2309-A from s3://acme-logs/x", "lot \x00id\x00 from \x00url\x00", ["B2309-A", "s3://acme-logs/x"]),
    ("From 4-5 days at -3 degrees", "from \x00num\x00-\x00num\x00 days at \x00num\x00 degrees", ["4", "5", "-3"]),
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


def test_a_semantic_bucket_holds_only_questions_with_the_same_values_in_order_and_the_same_context():
    def bucket(text: str, **extra) -> str:
        return semantic_view(SECRET, "chat", chat(text, **extra), SCOPE, "acme", Mode.enforce).bucket

    assert bucket("How do I reset my password?") == bucket("What's the way to reset my password?")
    assert bucket("Refund order #48213") != bucket("Refund order #48214")
    assert bucket("Churn went from 4% to 7%") != bucket("Churn went from 7% to 4%")
    assert bucket("Is license XJ42-P9QL-77A1 active?") != bucket("Is license XJ42-P9QL-77A7 active?")
    assert bucket("Point api.example.com to the new balancer") != bucket("Point app.example.com to the new balancer")
    system = [{"role": "system", "content": "You answer for the Paris office."}]
    assert bucket("Opening hours?") != bucket("Opening hours?", messages=system + chat("Opening hours?")["messages"])
    assert bucket("Opening hours?", temperature=0) != bucket("Opening hours?", max_tokens=5)


@pytest.mark.parametrize(("a", "b", "why"), [
    ("Is Dr. Okafor accepting new patients?", "Is Dr. Okonkwo accepting new patients?", "name"),
    ("We're migrating from MySQL to PostgreSQL.", "We're migrating from MySQL to MariaDB.", "name"),
    ("Three of our laptops won't connect.", "Four of our laptops won't connect.", "number"),
    ("Tomorrow works for the interview.", "Friday works for the interview.", "date"),
    ("Can I get a refund?", "Can't I get a refund?", "negation"),
    ("Mark all emails as read.", "Mark all emails as unread.", "opposite"),
    ("Turn on auto-renewal for my plan", "Could you switch off automatic renewal on my plan?", "opposite"),
    ("Merge the feature branch into main", "Can you undo the merge of the feature branch into main?", "negation"),
    ("Enable 2FA for my account", "Disable 2FA for my account", "opposite"),
    ("Order the results in ascending order.", "Order the results in descending order.", "opposite"),
    ("Can I take ibuprofen with my blood pressure pills?", "Is paracetamol safe with my blood pressure pills?",
     "entity"),
    ("Our marketing team needs access to the dashboards.", "Our sales team needs access to the dashboards.", "wording"),
])
def test_questions_alike_but_asking_different_things_are_told_apart(a, b, why):
    assert differs(a, b) == why
    assert differs(b, a) == why


@pytest.mark.parametrize(("a", "b"), [
    ("How can I reset my password?", "What's the process for resetting my password?"),
    ("Write a Python function that reverses a string.", "Can you write me a Python function to reverse a string?"),
    ("Summarize the plot of Hamlet in one paragraph.", "Give me a one-paragraph summary of Hamlet's plot."),
    ("Recommend some good books about World War II.", "Could you suggest a few good books about World War II?"),
    ("How do I request parental leave?", "What are the steps to request parental leave?"),
])
def test_rewordings_are_not_told_apart(a, b):
    assert differs(a, b) is None


def test_the_semantic_layer_embeds_a_template_with_each_slot_as_its_type():
    assert readable(keys.template("Refund order #48213")[0]) == "refund order [id]"


@pytest.mark.timeout(30)  # a bound on a hang, not a speed figure: quadratic patterns took minutes here
@pytest.mark.parametrize("unit", ["a-", "a.", "a@", "1-", "a.b@", "#", "'a", "a1-"])
def test_hostile_runs_are_templated_in_linear_time_and_long_texts_leave_the_template_and_semantic_layers(unit):
    text = (unit * 65_536)[:keys.TEMPLATE_MAX_CHARS]
    assert keys.template(text)[0]  # 64 KiB of it, once: seconds at worst, minutes before the look-behinds
    assert keys.template_digest(SECRET, SCOPE, "chat", chat(text + "x")) is None  # over TEMPLATE_MAX_CHARS
    assert keys.template_digest(SECRET, SCOPE, "chat", chat(text[:1000])) is not None
    assert semantic_view(SECRET, "chat", chat("x" * 1001), SCOPE, "acme", Mode.enforce) is None
    assert semantic_view(SECRET, "chat", chat("x" * 1000), SCOPE, "acme", Mode.enforce) is not None
