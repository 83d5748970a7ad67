"""A local stand-in for Langfuse's OTLP endpoint: records the spans it receives, can be told to hang.

Run: python -m tests.support.otlp_stub --port 9200
POST /api/public/otel/v1/traces  (protobuf, maybe gzip)  -> 200, spans kept
GET  /_stub/spans   -> every span received so far, attributes decoded (with --count-only: only how many)
POST /_stub/mode    -> body "ok" or "hang" (never answer, until the client gives up)

`OtlpStubProcess` runs one for tests and benchmarks, and can take it down for a while.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.processes import BIN, free_port, start, stop, wait_until


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class OtlpStub:
    def __init__(self, count_only: bool = False) -> None:
        self.count_only = count_only  # benchmarks: count spans, keep none
        self.counted = 0
        self.spans: list[dict] = []
        self.mode = "ok"
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if path == "/_stub/spans":
            return await _reply(send, 200, json.dumps({"spans": self.spans, "requests": self.requests,
                                                       "counted": self.counted}).encode())
        if path == "/_stub/mode" and method == "POST":
            self.mode = body.decode().strip()
            return await _reply(send, 200, b"{}")
        if path.endswith("/v1/traces") and method == "POST":
            self.requests += 1
            if self.mode == "hang":
                await asyncio.sleep(3600)
            headers = dict(scope["headers"])
            if headers.get(b"content-encoding") == b"gzip":
                body = gzip.decompress(body)
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            for resource_spans in export.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.counted += len(scope_spans.spans)
                    if self.count_only:
                        continue
                    for span in scope_spans.spans:
                        self.spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                           "parent_span_id": span.parent_span_id.hex(),
                                           "attributes": {a.key: _value(a.value) for a in span.attributes},
                                           "authorization": headers.get(b"authorization", b"").decode()})
            return await _reply(send, 200, b"{}")
        await _reply(send, 404, b"{}")


async def _reply(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class OtlpStubProcess:
    """The stand-in as a process on a port of its own, which can answer, hang (`set_mode`) or be down."""

    def __init__(self, log: Path, count_only: bool = False) -> None:
        self.port, self.log, self.count_only = free_port(), log, count_only
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._counted_before = 0  # spans received by the stand-ins stopped so far

    def start(self) -> None:
        self.process = start([str(BIN / "python"), "-m", "tests.support.otlp_stub", "--port", str(self.port),
                              *(["--count-only"] if self.count_only else [])], self.log)
        wait_until(f"{self.url}/_stub/spans", 20, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._counted_before += self._state()["counted"]
            stop(self.process)

    @contextmanager
    def down(self):
        """Nothing listens at the stand-in's address for a while (the spans it kept are forgotten)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def spans(self) -> list[dict]:
        return self._state()["spans"]

    def counted(self) -> int:
        """Spans received since the first start, across restarts."""
        return self._counted_before + self._state()["counted"]

    def exports(self) -> int:
        """How many export requests arrived (a hanging one included)."""
        return self._state()["requests"]

    def generations(self, marker: str, count: int = 1, wait: float = 10) -> list[dict]:
        """The Langfuse generation spans whose attributes mention `marker`, once `count` of them have arrived."""
        deadline = time.monotonic() + wait
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = [s for s in self.spans() if s["name"] == "model-call" and marker in json.dumps(s["attributes"])]
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{len(found)} of {count} generations marked {marker} reached Langfuse")

    def set_mode(self, mode: str) -> None:
        httpx.post(f"{self.url}/_stub/mode", content=mode, timeout=10)

    def _state(self) -> dict:
        return httpx.get(f"{self.url}/_stub/spans", timeout=10).json()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count-only", action="store_true")
    arguments = parser.parse_args()
    uvicorn.run(OtlpStub(arguments.count_only), host="127.0.0.1", port=arguments.port, log_level="warning")
