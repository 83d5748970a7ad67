"""The pipeline, in process: step order, refusing and answering steps, response halves, and the modes.

The first tests drive `Pipeline` with small steps of their own; the rest drive the app itself (tests/support/
inprocess.py) with its real steps, the fake provider where LiteLLM would be.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import yaml
from starlette.responses import Response

from wrapper.config import Mode
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.pipeline import Pipeline, StepResult, decided


class Marks:
    """A step that marks the body and answers with its name appended, or refuses, or answers, or breaks."""

    def __init__(self, name: str, mode: Mode = Mode.enforce, refuse: bool = False, answer: bool = False,
                 breaks: bool = False) -> None:
        self.name, self._mode, self.refuse, self.answered, self.breaks = name, mode, refuse, answer, breaks
        self.ran = 0

    def mode(self, ctx: RequestContext) -> Mode:
        return self._mode

    async def request(self, ctx: RequestContext) -> StepResult:
        self.ran += 1
        if self.breaks:
            raise RuntimeError("a bug")
        ctx.body["seen"].append(self.name)
        if self.refuse:
            return StepResult("refuse", refusal=GatewayError(403, f"{self.name} says no", code="no"))
        if self.answered:
            return StepResult("answer", answer=Response(b"from " + self.name.encode()))
        return StepResult("mark", {"at": len(ctx.body["seen"])}, half=Appends(self.name))


class Appends:
    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def answer(self, body: bytes) -> bytes:
        return body + b"|" + self.name

    def event(self, event: bytes) -> bytes:
        return event + b"|" + self.name

    def end(self) -> bytes:
        return b""


def run(*steps) -> tuple[RequestContext, Response | None]:
    """The steps, then (as upstream.forward does before anything goes out) the started ones' decisions."""
    ctx = RequestContext("unit")
    ctx.body = {"seen": []}

    async def flow() -> Response | None:
        answered = await Pipeline(steps).run(ctx)
        if answered is None and ctx.undecided:
            ctx.body["seen"].append("forward built")
            await decided(ctx)
        return answered

    return ctx, asyncio.run(flow())


def test_request_halves_run_in_order_and_response_halves_in_reverse():
    ctx, answered = run(Marks("a"), Marks("b"), Marks("c"))
    assert answered is None and ctx.body["seen"] == ["a", "b", "c"]
    body = b"answer"
    for half in reversed(ctx.halves):  # as upstream.forward applies them
        body = half.answer(body)
    assert body == b"answer|c|b|a"
    assert [(d["step"], d["mode"], d["decision"], d["at"]) for d in ctx.decisions] == [
        ("a", "enforce", "mark", 1), ("b", "enforce", "mark", 2), ("c", "enforce", "mark", 3)]


def test_a_refusing_step_stops_the_ones_after_it():
    later = Marks("c")
    with pytest.raises(GatewayError) as refused:
        run(Marks("a"), Marks("b", refuse=True), later)
    assert refused.value.status == 403 and later.ran == 0


def test_an_answering_step_answers_and_nothing_after_it_runs():
    later = Marks("c")
    ctx, answered = run(Marks("a"), Marks("b", answer=True), later)
    assert answered.body == b"from b" and later.ran == 0
    assert [d["decision"] for d in ctx.decisions] == ["mark", "answer"]


def test_shadow_runs_on_a_copy_records_and_changes_nothing():
    shadow_refusing, shadow_breaking = Marks("s1", Mode.shadow, refuse=True), Marks("s2", Mode.shadow, breaks=True)
    ctx, answered = run(Marks("a"), Marks("s0", Mode.shadow), shadow_refusing, shadow_breaking, Marks("z"))
    assert answered is None
    assert ctx.body["seen"] == ["a", "z"]  # the shadows marked only their copies
    assert [h.name for h in ctx.halves] == [b"a", b"z"]  # and left no response half
    assert [(d["step"], d["mode"], d["decision"]) for d in ctx.decisions] == [
        ("a", "enforce", "mark"), ("s0", "shadow", "mark"), ("s1", "shadow", "refuse"), ("s2", "shadow", "error"),
        ("z", "enforce", "mark")]
    assert shadow_refusing.ran == shadow_breaking.ran == 1


def test_off_does_not_run():
    off = Marks("o", Mode.off)
    ctx, _ = run(off, Marks("a"))
    assert off.ran == 0 and [d["step"] for d in ctx.decisions] == ["a"]


class Asks:
    """A step that asks a store (admission): its query leaves at `start`, its decision comes when awaited."""

    counts_in_shadow = True

    def __init__(self, name: str, mode: Mode = Mode.enforce, refuse: bool = False, breaks: bool = False) -> None:
        self.name, self._mode, self.refuse, self.breaks = name, mode, refuse, breaks
        self.held = False

    def mode(self, ctx: RequestContext) -> Mode:
        return self._mode

    async def request(self, ctx: RequestContext) -> StepResult:
        return await self.start(ctx)

    def start(self, ctx: RequestContext):
        ctx.body["seen"].append(f"{self.name} sent")  # the query left before any later step ran
        return self._answer(ctx)

    async def _answer(self, ctx: RequestContext) -> StepResult:
        await asyncio.sleep(0.01)  # the store's round trip
        ctx.body["seen"].append(f"{self.name} decided")
        if self.breaks:
            raise RuntimeError("a bug")
        if self.refuse:
            return StepResult("refuse", {"limit": "requests"}, refusal=GatewayError(429, "too many", code="rate"))
        self.held = True  # what it charged is held until the request ends
        return StepResult("admit", {"n": 1})


def test_a_started_step_is_decided_while_later_steps_run_and_recorded_in_its_place():
    ctx, answered = run(Marks("a"), Asks("admit"), Marks("b"), Marks("c"))
    assert answered is None
    # what LiteLLM is sent is built while the decision travels too; nothing waits for it sooner
    assert ctx.body["seen"] == ["a", "admit sent", "b", "c", "forward built", "admit decided"]
    assert [(d["step"], d["decision"]) for d in ctx.decisions] == [
        ("a", "mark"), ("admit", "admit"), ("b", "mark"), ("c", "mark")]


def test_a_started_steps_refusal_comes_before_a_later_steps_refusal_or_answer():
    for later in (Marks("b", refuse=True), Marks("b", answer=True)):
        with pytest.raises(GatewayError) as refused:
            run(Asks("admit", refuse=True), later)
        assert refused.value.status == 429
    with pytest.raises(GatewayError) as refused:  # admitted: the later refusal stands
        run(Asks("admit"), Marks("b", refuse=True))
    assert refused.value.status == 403


def test_a_started_step_is_awaited_when_a_later_step_breaks_so_what_it_holds_is_given_back():
    asks = Asks("admit")
    ctx = RequestContext("unit")
    ctx.body = {"seen": []}
    with pytest.raises(RuntimeError):
        asyncio.run(Pipeline([asks, Marks("b", breaks=True)]).run(ctx))
    assert asks.held and ctx.decisions[0]["decision"] == "admit"


def test_a_request_cancelled_while_a_started_step_decides_records_so_and_stays_cancelled():
    """The client leaves while admission's answer travels: the record says `cancelled`, not an empty decision."""
    ctx = RequestContext("unit")
    ctx.body = {"seen": []}

    async def flow() -> None:
        assert await Pipeline([Asks("admit"), Marks("b")]).run(ctx) is None
        waiting = asyncio.ensure_future(decided(ctx))
        await asyncio.sleep(0)  # waiting on the store's answer now
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(flow())
    assert ctx.decisions[0] == {"step": "admit", "mode": "enforce", "decision": "cancelled"}
    assert "admit decided" not in ctx.body["seen"]


def test_a_started_step_in_shadow_refuses_nothing_and_a_broken_one_only_records():
    ctx, answered = run(Asks("s", Mode.shadow, refuse=True), Asks("t", breaks=True, mode=Mode.shadow), Marks("b"))
    assert answered is None
    assert [(d["step"], d["decision"], d.get("status")) for d in ctx.decisions] == [
        ("s", "refuse", 429), ("t", "error", None), ("b", "mark", None)]


# --- The app in process, its real steps --------------------------------------------------------------------------

def set_pii(gateway, **endpoints) -> None:
    data = yaml.safe_load(gateway.config.read_text())
    for endpoint, policy in endpoints.items():
        data["tenants"]["acme"]["endpoints"][endpoint] = {"pii": policy}
    gateway.config.write_text(yaml.safe_dump(data, sort_keys=False))


def chat(text: str, model: str = "fake-echo", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


EMAIL = "jane.doe@example.com"


async def test_pii_shadow_forwards_the_raw_text_and_enforce_redacts(gateway):
    set_pii(gateway, shadowed={"mode": "shadow", "action": "redact"}, enforced={"mode": "enforce", "action": "redact"})
    answers = {}
    for endpoint in ("shadowed", "enforced"):
        marker = f"{endpoint}-{uuid.uuid4().hex}"
        reply = await gateway.client.post("/v1/chat/completions", json=chat(f"{marker} mail {EMAIL}"),
                                          headers={**gateway.auth(endpoint), "x-request-id": marker})
        assert reply.status_code == 200, reply.text
        [sent] = gateway.received(marker)
        answers[endpoint] = (sent["messages"][0]["content"], reply.json()["choices"][0]["message"]["content"])
    assert answers["shadowed"][0].endswith(EMAIL) and answers["shadowed"][1].endswith(EMAIL)
    assert answers["enforced"][0].endswith("<EMAIL_ADDRESS>") and answers["enforced"][1].endswith("<EMAIL_ADDRESS>")
    metrics = (await gateway.client.get("/metrics")).text
    assert 'gateway_policy_decisions_total{decision="redact",endpoint="shadowed",mode="shadow",step="pii",' in metrics
    assert 'gateway_policy_decisions_total{decision="redact",endpoint="enforced",mode="enforce",step="pii",' in metrics


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_response_half_restores_pseudonyms_in_whole_and_streamed_answers(gateway, stream):
    set_pii(gateway, enforced={"mode": "enforce", "action": "pseudonymize"})
    marker = uuid.uuid4().hex
    reply = await gateway.client.post("/v1/chat/completions", headers=gateway.auth("enforced"),
                                      json=chat(f"{marker} write to {EMAIL} and {EMAIL}", stream=stream))
    assert reply.status_code == 200
    assert gateway.received(marker)[0]["messages"][0]["content"].endswith("<EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>")
    if stream:
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in orjson.loads(e)["choices"])
    else:
        text = reply.json()["choices"][0]["message"]["content"]
    assert text == f"{marker} write to {EMAIL} and {EMAIL}"


async def test_a_shadow_answer_is_byte_identical_to_what_the_provider_sent(gateway):
    set_pii(gateway, shadowed={"mode": "shadow", "action": "pseudonymize"})
    gateway.provider.set_behaviours({"fake-echo": {"echo": True, "fixed": True}})
    replies = []
    for key in ("shadowed", "acme"):  # the tenant's own policy: off
        reply = await gateway.client.post("/v1/chat/completions", headers=gateway.auth(key), json=chat(f"hi {EMAIL}"))
        replies.append(reply.content)
    assert replies[0] == replies[1]


async def test_a_refusal_of_the_route_step_reaches_no_provider(gateway):
    marker = uuid.uuid4().hex
    reply = await gateway.client.post("/v1/chat/completions", headers=gateway.auth("acme"),
                                      json=chat(marker, model="openai/fake-chat"))
    assert reply.status_code == 404 and gateway.received(marker) == []


async def test_a_cache_hit_reported_by_litellm_is_recorded(gateway):
    """LiteLLM's cache key header is not passed to the client, but the record reads it (it did not before)."""
    auditor = gateway.auth("auditor")
    for cached in (False, True):
        request_id = uuid.uuid4().hex
        reply = await gateway.client.post("/v1/chat/completions", json=chat("hi", "cached" if cached else "fake-chat"),
                                          headers={**gateway.auth("acme"), "x-request-id": request_id})
        assert reply.status_code == 200 and "x-litellm-cache-key" not in reply.headers
        record = (await gateway.client.get(f"/v1/audit/events/{request_id}", headers=auditor)).json()["data"][0]["record"]
        assert record["cache_hit"] is cached


@pytest.mark.parametrize("value", ["one text", ["one text", "another"]], ids=["string", "array"])
async def test_pii_reads_an_embeddings_user_whatever_the_input_shape(gateway, value):
    """The user field was skipped when the input was a single string (found on review)."""
    set_pii(gateway, enforced={"mode": "enforce", "action": "redact"})
    marker = uuid.uuid4().hex
    reply = await gateway.client.post("/v1/embeddings", headers=gateway.auth("enforced"),
                                      json={"model": "fake-embed", "input": value, "user": f"{marker} {EMAIL}"})
    assert reply.status_code == 200, reply.text
    [sent] = gateway.received(marker)
    assert sent["user"] == f"{marker} <EMAIL_ADDRESS>"


async def test_an_input_pii_cannot_read_is_refused_naming_its_field(gateway):
    set_pii(gateway, enforced={"mode": "enforce", "action": "redact"})
    for path, body, param in (("/v1/embeddings", {"model": "fake-embed", "input": [1, 2, 3]}, "input"),
                              ("/v1/completions", {"model": "fake-chat", "prompt": [[1, 2], [3]]}, "prompt")):
        reply = await gateway.client.post(path, json=body, headers=gateway.auth("enforced"))
        error = reply.json()["error"]
        assert reply.status_code == 400 and error["code"] == "pii_unscannable_input" and error["param"] == param
        assert f"'{param}'" in error["message"]
