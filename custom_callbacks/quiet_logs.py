"""One line per failure in LiteLLM's log, not a traceback.

LiteLLM logs every failed call with its full traceback (50 to 150 lines,
several times per call when the router retries or falls back): provider
errors, timeouts, a stream the client left. In a gateway that is noise in
every log search, and the audit record already says what happened to which
request. The error line itself stays. GATEWAY_LITELLM_TRACEBACKS=true keeps
the tracebacks, for debugging LiteLLM itself.
"""

from __future__ import annotations

import logging
import os

TRACEBACKS_ENV = "GATEWAY_LITELLM_TRACEBACKS"


class _WithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def drop_litellm_tracebacks() -> None:
    if os.environ.get(TRACEBACKS_ENV, "").lower() in ("1", "true", "yes"):
        return
    from litellm._logging import handler  # the one handler of LiteLLM's three loggers

    if not any(isinstance(f, _WithoutTraceback) for f in handler.filters):
        handler.filters.insert(0, _WithoutTraceback())
