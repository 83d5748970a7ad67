"""Structured JSON logs: one object per line, with the request id when there is one."""

from __future__ import annotations

import logging
import sys

import orjson

from wrapper.observability.log_context import request_id_var, tenant_var
from wrapper.observability.tracing import current_trace_id

_configured = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", request_id_var), ("tenant", tenant_var)):
            value = var.get()
            if value is not None:
                entry[key] = value
        fields = getattr(record, "fields", None)  # structured fields of the line (the access log's)
        if isinstance(fields, dict):
            entry.update(fields)
        trace_id = current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        if record.exc_info:
            # The type only: tracebacks can carry request content, and clients never see them anyway.
            kind, _, tb = record.exc_info
            entry["error"] = kind.__name__ if kind else None
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                entry["where"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        return orjson.dumps(entry).decode()


def configure_logging(level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("wrapper")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _configured = True


_access = logging.getLogger("wrapper.access")
ACCESS_FIELDS = ("request_id", "tenant", "endpoint", "credential_id", "method", "path", "status", "outcome", "model",
                 "model_served", "stream", "tokens_in", "tokens_out", "cost", "latency_ms", "ttft_ms", "error_code")


def log_access(record: dict) -> None:
    """One line per request (GATEWAY_ACCESS_LOG): from its audit record, never its content."""
    _access.info("request", extra={"fields": {name: record.get(name) for name in ACCESS_FIELDS}})
