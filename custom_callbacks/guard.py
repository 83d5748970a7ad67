"""Refuse LiteLLM requests that did not come through the wrapper.

LiteLLM listens on localhost only, but anyone on the pod who holds the master
key could still call it directly and skip auth, limits, PII redaction and
audit. This pre-call hook lets a request through only when its metadata
carries the wrapper's seal (see seal.py).
"""

from __future__ import annotations

import json
import logging
import os

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from pydantic import TypeAdapter, ValidationError

from custom_callbacks.seal import SEALED_KEYS, SECRET_ENV, refusal_reason, secret_from_env

logger = logging.getLogger("custom_callbacks.guard")


def _log_requests() -> bool:
    """GATEWAY_LOG_REQUESTS (see wrapper/settings.py), read as the wrapper's settings read it: a line per admitted request."""
    try:
        return TypeAdapter(bool).validate_python(os.environ.get("GATEWAY_LOG_REQUESTS", "false"))
    except ValidationError:
        return False


if not logger.handlers:  # LiteLLM configures its own loggers only; give ours a plain stdout line
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.DEBUG if _log_requests() else logging.INFO)
    logger.propagate = False

REFUSAL = "This LiteLLM instance only serves requests sent through the gateway."


class WrapperOnlyGuard(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.secret = secret_from_env()
        if self.secret is None:
            logger.error("%s is not set: every request will be refused", SECRET_ENV)

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type):
        metadata = data.get("metadata") or data.get("litellm_metadata")
        reason = refusal_reason(self.secret, metadata)
        if reason is not None:
            logger.warning("refused a %s request that did not come through the wrapper: %s", call_type, reason)
            raise HTTPException(status_code=403, detail={"error": REFUSAL})
        if logger.isEnabledFor(logging.DEBUG):  # what LiteLLM was told, for operators (and tests) who ask
            accepted = {key: metadata.get(key) for key in SEALED_KEYS}
            accepted["user"] = data.get("user")
            logger.debug("gateway_request %s", json.dumps({"call_type": str(call_type), **accepted}, sort_keys=True))
        return data
