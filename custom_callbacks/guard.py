"""Refuse LiteLLM requests that did not come through the wrapper.

LiteLLM listens on localhost only, but anyone on the pod who holds the master
key could still call it directly and skip auth, limits, PII redaction and
audit. This pre-call hook lets a request through only when its metadata
carries the wrapper's seal (see seal.py).
"""

from __future__ import annotations

import logging

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

from custom_callbacks.seal import SECRET_ENV, is_sealed, secret_from_env

logger = logging.getLogger("custom_callbacks.guard")

REFUSAL = "This LiteLLM instance only serves requests sent through the gateway."


class WrapperOnlyGuard(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.secret = secret_from_env()
        if self.secret is None:
            logger.error("%s is not set: every request will be refused", SECRET_ENV)

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type):
        metadata = data.get("metadata") or data.get("litellm_metadata")
        if not is_sealed(self.secret, metadata):
            logger.warning("refused a %s request without the wrapper's seal", call_type)
            raise HTTPException(status_code=403, detail={"error": REFUSAL})
        return data
