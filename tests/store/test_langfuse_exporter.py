"""The Langfuse exporter process (custom_callbacks.langfuse_exporter), driven as LiteLLM's callback drives it.

A real exporter process and a real (stand-in) Langfuse: what LiteLLM hands over
before it stops reaches Langfuse; a stuck exporter makes the callback drop
traces instead of waiting; a dead one is started again.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from custom_callbacks.langfuse_exporter import ExporterProcess
from custom_callbacks.langfuse_traces import call_facts


@pytest.fixture
def exporter(langfuse, monkeypatch):
    for name, value in {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test",
                        "LANGFUSE_BASE_URL": langfuse.url, "LANGFUSE_FLUSH_INTERVAL": "0.2",
                        "LANGFUSE_TIMEOUT": "2"}.items():
        monkeypatch.setenv(name, value)  # the exporter process inherits them
    exporter = ExporterProcess()
    yield exporter
    pid = exporter.pid
    exporter.close()
    if pid is not None:
        _wait_for_exit(pid)


def _wait_for_exit(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, signal.SIGCONT)  # also wakes a stopped one, so that it can end
        except ProcessLookupError:
            return
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return
        time.sleep(0.05)
    raise AssertionError(f"the exporter {pid} did not end within {timeout} s")


def facts(request_id: str, tenant: str = "acme", failed: bool = False) -> dict:
    """What the callback hands over for one call, from a logging payload shaped like LiteLLM's."""
    return call_facts({
        "model": "fake-chat",
        "litellm_params": {"metadata": {"gateway_tenant_id": tenant, "gateway_request_id": request_id,
                                        "gateway_user_id": "ada", "gateway_endpoint": "support",
                                        "gateway_seal": "checked-by-the-guard"}},  # only sealed metadata is read
        "standard_logging_object": {"model_group": "fake-chat", "model": "openai/fake-chat", "prompt_tokens": 11,
                                    "completion_tokens": 7, "response_cost": 0.25,
                                    "error_information": {"error_class": "RateLimitError"} if failed else {}},
    }, failed)


def test_what_litellm_hands_over_before_it_stops_reaches_langfuse(exporter, langfuse):
    marker = f"exp-{uuid.uuid4().hex[:12]}"
    for n in range(50):
        assert exporter.send(facts(f"{marker}-{n}", failed=n == 0))
    pid = exporter.pid
    exporter.close()  # as when LiteLLM ends: the exporter reads to the end, flushes, and exits
    _wait_for_exit(pid)
    spans = langfuse.generations(marker, 50, wait=2)  # already there: nothing waits in the exporter after exit
    assert len(spans) == 50
    [failed] = [s for s in spans if any("level" in k and v == "ERROR" for k, v in s["attributes"].items())]
    assert f"{marker}-0" in json.dumps(failed["attributes"])
    assert any("status_message" in k and v == "RateLimitError" for k, v in failed["attributes"].items())


def test_a_stuck_exporter_makes_the_callback_drop_traces_not_wait(exporter):
    os.kill(exporter.pid, signal.SIGSTOP)  # reads nothing more: the pipe fills
    results = [exporter.send(facts(f"stuck-{n}")) for n in range(20_000)]
    assert results[0] is True and results[-1] is False
    assert exporter.sent + exporter.dropped == 20_000 and exporter.dropped > 0
    # The pipe is the bound: what was accepted fits in it.
    line_bytes = len(json.dumps(facts("stuck-10000"), separators=(",", ":"))) + 1
    assert exporter.sent * line_bytes <= 2 * (1 << 20)
    os.kill(exporter.pid, signal.SIGCONT)


def test_a_dead_exporter_is_started_again(exporter, langfuse):
    first = exporter.pid
    os.kill(first, signal.SIGKILL)
    _wait_for_exit(first)
    exporter.restart_seconds = 0
    marker = f"again-{uuid.uuid4().hex[:12]}"
    sent = [exporter.send(facts(f"{marker}-{n}")) for n in range(3)]
    assert exporter.pid not in (None, first)
    assert sent.count(True) >= 2  # the first may meet the dead one's pipe
    langfuse.generations(marker, sent.count(True), wait=15)


def test_a_trace_too_large_for_one_atomic_write_is_dropped_whole(exporter):
    assert exporter.send(facts("x" * 5000)) is False and exporter.dropped == 1
    assert exporter.send(facts("small")) is True
