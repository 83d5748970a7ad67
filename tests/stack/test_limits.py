"""Admission through the whole stack, on Redis: rate limits, concurrency, token and USD budgets, per endpoint of the
`cyberdyne` tenant (tests/support/stack.py: CYBERDYNE_LIMITS), with what a client and an operator see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.audit_db import the_record
from tests.support.stack import COST_EACH, PRICES


def _chat(stack, endpoint: str, model: str = "fake-chat", timeout: float = 60, **extra) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth_for(f"cyberdyne-{endpoint}"), timeout=timeout,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


@pytest.fixture(autouse=True)
def fresh_counters():
    """Each test starts from empty counters: other tests (a scan that calls once with every key) count too."""
    import redis

    from tests.support.stack import STACK_REDIS_URL

    client = redis.Redis.from_url(STACK_REDIS_URL)
    keys = client.keys("gw:lim:{cyberdyne}:*")
    if keys:
        client.delete(*keys)
    client.close()


def most_in_flight(calls: list[dict]) -> int:
    """The most calls the provider had open at any one moment."""
    edges = sorted([(c["received_at"], 1) for c in calls] + [(c["finished_at"], -1) for c in calls])
    most = current = 0
    for _, step in edges:  # at equal times an end sorts before a start: back to back is not at once
        current += step
        most = max(most, current)
    return most


def _seconds(duration: str) -> float:
    """OpenAI's x-ratelimit-reset-* form (`20ms`, `1.5s`, `6m0s`) in seconds."""
    if duration.endswith("ms"):
        return int(duration[:-2]) / 1000
    minutes, _, seconds = duration[:-1].rpartition("m")
    return int(minutes or 0) * 60 + float(seconds)


def test_requests_beyond_the_rate_are_refused_with_the_time_to_wait_and_never_reach_the_provider(stack, fake_provider):
    from tests.stack.test_metrics import sample, scrape

    refusals_before = sample(scrape(stack), "gateway_limit_decisions_total", tenant="cyberdyne", endpoint="burst",
                             mode="enforce", decision="refuse", limit="requests")
    before = len(fake_provider.log())
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: _chat(stack, "burst"), range(8)))
    served = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert (len(served), len(refused)) == (5, 3)
    assert len([r for r in fake_provider.log()[before:] if r["path"].endswith("/chat/completions")]) == 5
    for reply in refused:
        assert reply.json()["error"]["code"] == "rate_limit_requests"
        assert 55 <= int(reply.headers["retry-after"]) <= 60  # the first of the five leaves the window then
    assert {r.headers["x-ratelimit-limit-requests"] for r in served} == {"5"}
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in served) == [0, 1, 2, 3, 4]
    # the first of the five leaves the window within a minute: then one more may come
    assert all(50 < _seconds(r.headers["x-ratelimit-reset-requests"]) <= 60 for r in served)
    samples = scrape(stack)
    assert sample(samples, "gateway_limit_decisions_total", tenant="cyberdyne", endpoint="burst", mode="enforce",
                  decision="refuse", limit="requests") == refusals_before + 3


def test_no_more_requests_than_the_concurrency_limit_are_in_flight_and_slots_come_back(stack, fake_provider):
    before = len(fake_provider.log())
    with ThreadPoolExecutor(6) as pool:  # paced streams take ~0.25 s each: six at once meet a limit of two
        replies = list(pool.map(lambda _: _chat(stack, "narrow", "paced", stream=True), range(6)))
    assert sorted(r.status_code for r in replies).count(200) >= 2
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 429} <= {"concurrency"}
    assert most_in_flight([r for r in fake_provider.log()[before:] if r["model"] == "paced"]) <= 2
    # Clients that leave mid-stream give their slots back: 20 of them, then two at once are served.
    for _ in range(20):
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers=stack.auth_for("cyberdyne-narrow"),
                          timeout=30, json={"model": "long-stream", "stream": True,
                                            "messages": [{"role": "user", "content": "hi"}]}) as reply:
            if reply.status_code == 200:
                next(reply.iter_lines())  # the first event, then hang up
    time.sleep(0.5)
    with ThreadPoolExecutor(2) as pool:
        assert [r.status_code for r in pool.map(lambda _: _chat(stack, "narrow"), range(2))] == [200, 200]


def test_a_daily_budget_is_never_overspent_warns_before_and_says_when_it_resets(stack):
    """$0.01 a day; each answer costs $0.0025 and reserves a little more up front (its prompt and max_tokens)."""
    served, spent, answers = 0, 0.0, []
    for _ in range(10):
        request_id = uuid.uuid4().hex
        reply = httpx.post(f"{stack.url}/v1/chat/completions", timeout=60,
                           headers={**stack.auth_for("cyberdyne-frugal"), "x-request-id": request_id},
                           json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7})
        if reply.status_code != 200:
            break
        served += 1
        spent += float(reply.headers["x-litellm-response-cost"])
        answers.append((request_id, reply.headers.get("x-gateway-budget-warning")))
        time.sleep(0.2)  # the settlement follows the answer
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "budget_exceeded"
    assert served >= 2 and spent <= 0.01 + 1e-9 and served * COST_EACH == pytest.approx(spent)
    now = time.gmtime()
    assert abs(int(reply.headers["retry-after"]) - (86400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec))) <= 2
    # the endpoint warns at 50%: the first answer (a quarter of the budget) does not, the last (with its
    # reservation, past half) says so, and so does its record
    last_id, warning = answers[-1]
    assert answers[0][1] is None and warning and warning.startswith("endpoint daily budget ") and \
        int(warning.split()[-2].rstrip("%")) >= 50
    admitted = next(d for d in the_record(stack.database_url, last_id)["decisions"] if d["step"] == "admit")
    [budget] = admitted["budgets"]
    assert (budget["scope"], budget["kind"], budget["limit_usd"]) == ("endpoint:frugal", "usd_day", 0.01)
    assert budget["used_usd"] >= 0.005 and admitted["budget_warning"] == warning


def test_finance_sees_each_budgets_use_in_its_period_and_only_its_own_tenants(stack):
    spent = sum(float(_chat(stack, "frugal", max_tokens=7).headers["x-litellm-response-cost"]) for _ in range(2))
    time.sleep(0.3)  # settled after the answers
    reply = httpx.get(f"{stack.url}/v1/costs/budgets", headers=stack.auth_for("cyberdyne-finance"), timeout=30)
    assert reply.status_code == 200, reply.text
    rows = {(row["scope"], row["kind"]): row for row in reply.json()["data"]}
    frugal = rows[("endpoint:frugal", "usd_day")]
    assert frugal["tenant"] == "cyberdyne" and frugal["limit_usd"] == 0.01
    assert frugal["used_usd"] == pytest.approx(spent) and frugal["remaining_usd"] == pytest.approx(0.01 - spent)
    assert frugal["period"] == time.strftime("%Y-%m-%d", time.gmtime()) and reply.json()["store"] == "redis"
    # another tenant's finance, an app key, a forged tenant parameter: refused, nothing about cyberdyne leaks
    for headers, query in ((stack.auth_for("acme-finance"), "?tenant=cyberdyne"), (stack.auth_for("cyberdyne-frugal"), ""),
                           (stack.auth_for("acme-finance"), "?tenant=cyberdyne%00")):
        refused = httpx.get(f"{stack.url}/v1/costs/budgets{query}", headers=headers, timeout=30)
        assert refused.status_code == 403 and "frugal" not in refused.text, refused.text
    own = httpx.get(f"{stack.url}/v1/costs/budgets", headers=stack.auth_for("acme-finance"), timeout=30)
    assert own.status_code == 200 and {row["tenant"] for row in own.json()["data"]} <= {"acme"}
    every = httpx.get(f"{stack.url}/v1/costs/budgets", headers=stack.auth_for("admin"), timeout=30).json()["data"]
    assert ("cyberdyne", "endpoint:frugal") in {(row["tenant"], row["scope"]) for row in every}


def test_tokens_are_reserved_up_front_and_a_request_that_alone_exceeds_the_limit_is_refused(stack):
    alone = _chat(stack, "tokens", max_tokens=1000)  # 1,000 completion tokens could never fit 400 a minute
    assert alone.status_code == 429 and alone.json()["error"]["code"] == "rate_limit_tokens"
    assert "retry-after" not in alone.headers and "alone" in alone.json()["error"]["message"]
    served = [_chat(stack, "tokens", max_tokens=100).status_code for _ in range(6)]
    # each reserves ~105 (its prompt and 100) and settles to the 18 it used: far more than 400 / 105 get through
    assert served == [200] * 6


def test_a_stream_settles_its_tokens_to_what_it_used(stack):
    streamed = []
    for _ in range(6):  # ~105 reserved each against 400 a minute: only settlement lets all six through
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers=stack.auth_for("cyberdyne-tokens"),
                          timeout=30, json={"model": "paced", "stream": True, "max_tokens": 100,
                                            "messages": [{"role": "user", "content": "hi"}]}) as reply:
            streamed.append((reply.status_code, list(reply.iter_lines())))
        time.sleep(0.1)  # settled within 2 ms of the end
    assert [status for status, _ in streamed] == [200] * 6


def test_shadow_mode_answers_everything_and_records_the_refusals_enforce_would_make(stack):
    request_ids = [uuid.uuid4().hex for _ in range(5)]
    for request_id in request_ids:
        reply = httpx.post(f"{stack.url}/v1/chat/completions", timeout=30,
                           headers={**stack.auth_for("cyberdyne-watched"), "x-request-id": request_id},
                           json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200 and "x-ratelimit-limit-requests" not in reply.headers
    decisions = [next(d for d in the_record(stack.database_url, request_id)["decisions"]
                      if d["step"] == "admit") for request_id in request_ids]
    assert [d["decision"] for d in decisions] == ["admit", "admit", "refuse", "refuse", "refuse"]
    assert all(d["mode"] == "shadow" for d in decisions)
    assert decisions[2]["code"] == "rate_limit_requests" and decisions[2]["status"] == 429


@pytest.fixture(scope="module")
def second_replica(stack, tmp_path_factory):
    """Another wrapper in front of the stack's LiteLLM, sharing its config, audit store, keys and Redis."""
    from tests.support.stack import INTERNAL_SECRET, MASTER_KEY, STACK_REDIS_URL
    from tests.support.wrapper import start_wrapper

    replica = start_wrapper(tmp_path_factory.mktemp("replica"), {
        "GATEWAY_CONFIG": str(stack.config), "GATEWAY_LITELLM_CONFIG": str(stack.litellm_config),
        "GATEWAY_LITELLM_PORT": stack.litellm_url.rsplit(":", 1)[1], "GATEWAY_LITELLM_MASTER_KEY": MASTER_KEY,
        "GATEWAY_INTERNAL_SECRET": INTERNAL_SECRET, "GATEWAY_DATABASE_URL": stack.database_url,
        "GATEWAY_REDIS_URL": STACK_REDIS_URL, "GATEWAY_VAR_DIR": str(stack.config.parent / "var")})
    yield replica.url
    replica.stop()


def test_two_replicas_share_one_rate_exactly(stack, second_replica, fake_provider):
    urls = [stack.url, second_replica]
    headers = stack.auth_for("cyberdyne-shared-rate")
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
    with ThreadPoolExecutor(64) as pool:
        replies = list(pool.map(lambda i: httpx.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=headers,
                                                     timeout=60), range(100)))
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 30 and statuses.count(429) == 70
    assert {r.status_code for r in replies[1::2]} == {200, 429}  # both replicas served and refused


def test_two_replicas_never_have_more_than_the_concurrency_limit_in_flight(stack, second_replica, fake_provider):
    urls = [stack.url, second_replica]
    headers = stack.auth_for("cyberdyne-shared-slots")
    body = {"model": "paced", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    before = len(fake_provider.log())
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: httpx.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=headers,
                                                     timeout=60), range(32)))
    refused = [r for r in replies if r.status_code == 429]
    assert {r.status_code for r in replies} <= {200, 429} and len(replies) - len(refused) >= 3
    assert refused and {r.json()["error"]["code"] for r in refused} == {"concurrency"}  # the slots were full
    # at most the limit at the provider (a slot is held from admission to the end, so on a slow machine the
    # provider may see fewer at once than the gateway held)
    assert most_in_flight([r for r in fake_provider.log()[before:] if r["model"] == "paced"]) <= 3


def test_an_operator_sees_the_limits_in_force_and_their_use_now(stack):
    from tests.support.processes import BIN
    from tests.support.stack import STACK_REDIS_URL

    for _ in range(2):
        assert _chat(stack, "watched").status_code == 200  # shadow: counted, never refused
    shown = subprocess.run([str(BIN / "gateway"), "--config", str(stack.config), "limits", "show", "--tenant",
                            "cyberdyne", "--json"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "GATEWAY_REDIS_URL": STACK_REDIS_URL})
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    rows = {(row["scope"], row["kind"]): row for row in report["limits"]}
    assert rows[("endpoint:watched", "requests")]["limit"] == 2 and rows[("endpoint:watched", "requests")]["used"] >= 2
    assert rows[("endpoint:frugal", "usd_day")]["used"] <= 0.01
    assert rows[("endpoint:narrow", "concurrency")]["used"] == 0  # every slot given back
    assert report["store"] == "redis"


def _metered_use(stack) -> float:
    rows = httpx.get(f"{stack.url}/v1/costs/budgets", headers=stack.auth_for("cyberdyne-finance"), timeout=30).json()
    return next((row["used_usd"] for row in rows["data"] if row["scope"] == "endpoint:metered"), 0.0)


def test_a_request_the_client_abandons_after_it_was_forwarded_keeps_its_reservation(stack, fake_provider):
    """LiteLLM lets the provider finish a whole answer's call (and a stream's until its first chunk) after the
    client leaves, so the provider may bill it: walking away must not be a way to spend without being charged."""
    body = {"model": "stalls", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        before = _metered_use(stack)
        try:  # the client gives up after 0.5 s; the first token is 3 s away
            with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json={**body, "stream": stream},
                              headers=stack.auth_for("cyberdyne-metered"), timeout=0.5) as reply:
                pytest.fail(f"answered before the client gave up: {reply.status_code} {reply.read()[:300]!r}")
        except httpx.ReadTimeout:
            pass
        time.sleep(1.0)  # settled once the request ended
        kept = _metered_use(stack) - before
        assert kept >= 50 * PRICES["output"], (stream, kept)  # the reservation (50 completion tokens and more)
    before = _metered_use(stack)
    answered = _chat(stack, "metered", max_tokens=50)  # one that is answered settles to what it cost
    time.sleep(0.5)
    assert _metered_use(stack) - before == pytest.approx(float(answered.headers["x-litellm-response-cost"]))


def _litellm_pid(stack) -> int:
    port = stack.litellm_url.rsplit(":", 1)[1]
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                words = cmdline.read().split(b"\0")
        except OSError:
            continue
        if any(b"litellm" in word for word in words[:2]) and b"--port" in words and port.encode() in words:
            return int(entry)
    raise AssertionError("LiteLLM's process was not found")


def test_a_hung_up_streams_slot_comes_back_only_once_litellm_has_closed_the_providers_stream(stack, fake_provider):
    """LiteLLM closes the provider's stream of a client that hung up only when its event loop gets to it (under load,
    up to seconds later): until then the stream is still open at the provider, so its slot must stay taken. Here
    LiteLLM is stopped (SIGSTOP) across the hang-up, the longest of lags: an impatient client retrying every 20 ms is
    refused all along, and once LiteLLM runs again it closes the stream and gives the slot back, so the provider never
    sees two calls at once on a limit of one."""
    import redis

    from tests.support.stack import STACK_REDIS_URL
    from wrapper.upstream.stream_usage import COUNT_TIMEOUT_SECONDS

    before = len(fake_provider.log())
    body = {"model": "drip", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    litellm = _litellm_pid(stack)
    try:
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                          headers=stack.auth_for("cyberdyne-one-slot")) as reply:
            assert reply.status_code == 200
            next(line for line in reply.iter_lines() if '"content"' in line)  # the first content, then hang up
            os.kill(litellm, signal.SIGSTOP)
        # longer than the wrapper waits to count a cut stream's tokens (on LiteLLM): its request is over by then
        stopped_until = time.monotonic() + COUNT_TIMEOUT_SECONDS + 1.5
        while time.monotonic() < stopped_until:
            answer = _chat(stack, "one-slot", timeout=1.0)  # admitted, it would wait for the stopped LiteLLM
            assert answer.status_code == 429 and answer.json()["error"]["code"] == "concurrency"
            time.sleep(0.02)
    finally:
        os.kill(litellm, signal.SIGCONT)
    resumed = time.monotonic()
    while (answer := _chat(stack, "one-slot")).status_code == 429:
        assert time.monotonic() - resumed < 10, "the slot never came back"
        time.sleep(0.02)
    assert answer.status_code == 200
    calls = [c for c in fake_provider.log()[before:] if c["model"] in ("drip", "fake-chat")]
    assert [c["model"] for c in calls] == ["drip", "fake-chat"]
    assert most_in_flight(calls) == 1, calls  # the provider's stream was closed before the next call came
    assert calls[0]["outcome"] == "caller_disconnected"  # closed by LiteLLM, not run to its end
    time.sleep(0.3)
    client = redis.Redis.from_url(STACK_REDIS_URL)
    assert client.zcard("gw:lim:{cyberdyne}:endpoint:one-slot:concurrency") == 0  # nothing left taken
    client.close()
