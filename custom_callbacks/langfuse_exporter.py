"""The Langfuse SDK in a process of its own, fed one line of facts per model call.

LiteLLM serves every request of the pod from one Python process, so whatever
its callbacks do takes time from requests. The Langfuse SDK spends about 0.4 ms
of CPU per trace (building OpenTelemetry spans, then encoding and sending them
from a thread that still needs the interpreter lock). Here the callback's share
is one non-blocking write of a JSON line to a pipe; this process reads the
lines and does the rest.

Bounded and never in the way: a full pipe (the exporter is behind, or Langfuse
hangs) drops the trace and counts it; a dead exporter is started again, at most
every few seconds. The exporter ends when LiteLLM does (its end of the pipe
closes), after flushing what it holds for at most a few seconds.

Run as `python -m custom_callbacks.langfuse_exporter` (LiteLLM's callback does
that); it needs Langfuse's own LANGFUSE_* variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import orjson

logger = logging.getLogger("custom_callbacks.langfuse")

PIPE_BYTES = 1 << 20  # about 3,000 traces of slack while the exporter catches up
_LINE_LIMIT = 4096  # PIPE_BUF: a write this size or smaller is all or nothing, never half a line
_FLUSH_SECONDS = 5.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ExporterProcess:
    """The callback's side: the exporter process and the pipe to it."""

    restart_seconds = 5.0  # a dead exporter is started again at most this often

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._started_at = float("-inf")
        self.sent = self.dropped = 0
        self._running()  # started now, so that the first trace does not wait for the SDK's import

    def send(self, facts: dict) -> bool:
        """Queue one trace; False when it was dropped (never blocks, never raises)."""
        line = orjson.dumps(facts) + b"\n"
        if len(line) > _LINE_LIMIT or not self._running():
            return self._drop()
        try:
            os.write(self._process.stdin.fileno(), line)
        except BlockingIOError:  # the pipe is full: the exporter is behind
            return self._drop()
        except OSError:  # the exporter died (a broken pipe); a later call starts another
            self._discard()
            return self._drop()
        self.sent += 1
        return True

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        if self._process is not None:
            self._process.stdin.close()  # the exporter flushes and ends

    def _running(self) -> bool:
        if self._process is not None:
            if self._process.poll() is None:
                return True
            self._discard()
        if time.monotonic() - self._started_at < self.restart_seconds:
            return False
        self._started_at = time.monotonic()
        try:
            self._process = subprocess.Popen([sys.executable, "-m", "custom_callbacks.langfuse_exporter"],
                                             stdin=subprocess.PIPE)
        except OSError as exc:
            logger.warning("could not start the Langfuse exporter (%s)", exc)
            return False
        fd = self._process.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the system's default size (64 KiB) is still a bound
        return True

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        self._process.poll()  # reaped, if it has ended
        self._process = None

    def _drop(self) -> bool:
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            logger.warning("Langfuse traces dropped so far: %d (the exporter is behind or not running)", self.dropped)
        return False


def export(client, facts: dict) -> None:
    """One model call as a Langfuse generation in the request's trace."""
    from langfuse import propagate_attributes

    with propagate_attributes(user_id=facts.get("user_id"), tags=facts["tags"], metadata=facts["ids"],
                              trace_name="gateway-request"):
        client.start_observation(
            trace_context={"trace_id": client.create_trace_id(seed=facts["trace_seed"])}, name="model-call",
            as_type="generation", model=facts.get("model"), usage_details=facts["usage"],
            cost_details={"total": facts["cost"]}, level=facts.get("level"), status_message=facts.get("error"),
            metadata=facts["ids"],
        ).end()


def main() -> None:
    # LiteLLM's stop signals reach this process too; it ends when LiteLLM's end of the pipe closes instead,
    # so that nothing LiteLLM wrote before it stopped is lost.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from langfuse import Langfuse

    client = Langfuse()
    for line in sys.stdin.buffer:
        try:
            export(client, orjson.loads(line))
        except Exception as exc:  # one bad trace must not end the exporter
            logger.warning("could not export a trace to Langfuse (%s)", type(exc).__name__)
    flushing = threading.Thread(target=client.shutdown, daemon=True)
    flushing.start()
    flushing.join(_FLUSH_SECONDS)  # a hanging Langfuse must not keep the pod from stopping
    os._exit(0)


if __name__ == "__main__":
    main()
