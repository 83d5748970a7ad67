"""Refuse LiteLLM requests that did not come through the wrapper, or were changed since.

LiteLLM listens on localhost only, but anyone on the pod who holds the master
key could still call it directly and skip auth, limits, PII redaction and
audit. This pre-call hook lets a request through only when its metadata
carries the wrapper's seal (see seal.py) and the body still fits it: the model
sealed, no field beyond those sealed, the control fields' values as sealed, and
no field LiteLLM acts on (by LiteLLM's own list) unless it is one the gateway
sets. Defence in depth: the wrapper's allow-lists (wrapper/routes)
already keeps every such field from a client.
"""

from __future__ import annotations

import json
import logging
import os

import litellm
from litellm.constants import LITELLM_PROXY_ADMIN_NAME
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.llms.anthropic import ANTHROPIC_API_HEADERS
from litellm.types.utils import is_litellm_owned_kwarg
from pydantic import TypeAdapter, ValidationError

from custom_callbacks.quiet_logs import drop_litellm_tracebacks
from custom_callbacks.slot_release import release_after_close
from custom_callbacks.seal import (
    CONTROL_FIELDS,
    SEALED_KEYS,
    SEAL_KEY,
    SECRET_ENV,
    STORED_OBJECT,
    WARM_UP_TENANT,
    controls_digest,
    refusal_reason,
    secret_from_env,
)

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
# Top-level fields LiteLLM's proxy adds to a request before the pre-call hook (checked for 1.108.5 by the stack
# tests: were it to add another, requests would be refused, loudly): its own bookkeeping, and the trace and session
# ids it reads from the headers the wrapper sends (traceparent, baggage).
ADDED_BY_LITELLM = frozenset({"litellm_call_id", "litellm_logging_obj", "proxy_server_request", "secret_fields",
                              "litellm_metadata", "litellm_trace_id", "litellm_session_id"})
GATEWAY_SET = frozenset({"metadata", *CONTROL_FIELDS})
# Calls that name a stored response by its id (GET, DELETE, input items) rather than a model.
LOOKUP_CALLS = frozenset({"aget_responses", "adelete_responses", "alist_input_items"})


def body_refusal(data: dict, metadata: dict, call_type: str = "") -> str | None:
    """None when the body is the one sealed, else why not (field names only, never values)."""
    sealed = frozenset(metadata["gateway_fields"].split(","))
    unsealed = sorted(set(data) - sealed - ADDED_BY_LITELLM - _added_for(call_type, data))
    if unsealed:
        return f"fields that were not sealed: {_names(unsealed)}"
    sealed_model = metadata["gateway_model"]
    if sealed_model == STORED_OBJECT and call_type in LOOKUP_CALLS and "model" not in data:
        pass  # a stored response, named by its id: LiteLLM finds its deployment in the id
    elif data.get("model") not in (sealed_model, litellm.model_alias_map.get(sealed_model)):
        return "the model is not the one sealed"
    if controls_digest(data) != (metadata.get("gateway_controls") or ""):
        return "control fields differ from those sealed"
    owned = sorted(key for key in data if key in sealed and key not in GATEWAY_SET and is_litellm_owned_kwarg(key))
    if owned:
        return f"fields LiteLLM acts on that only the gateway may set: {_names(owned)}"
    return None


def _added_for(call_type: str, data: dict) -> frozenset[str]:
    """Fields LiteLLM adds for one kind of call, exactly as it adds them.

    Messages: `provider_specific_header`, the Anthropic API headers the wrapper passed on, and only those.
    Image generation: the prompt as one user message, for guardrails (LiteLLM takes the prompt back from it after
    the hooks, so any other message would change the prompt: it stays refused). Speech: `user`, set to the
    authenticated caller's id, which for the gateway's master key is LiteLLM's admin name. Transcriptions: the
    uploaded file (LiteLLM takes it out of the multipart body apart from the fields) and `user`, as for speech.
    """
    if call_type == "image_generation" and data.get("messages") == [{"role": "user", "content": data.get("prompt")}]:
        return frozenset({"messages"})
    header = data.get("provider_specific_header")
    if isinstance(header, dict) and set(header.get("extra_headers") or {"?": 1}) <= ANTHROPIC_API_HEADERS:
        # anthropic-version and anthropic-beta, which the wrapper passes on (checked) for the Messages routes
        return frozenset({"provider_specific_header"}) | _added_for(call_type, {**data, "provider_specific_header": 0})
    if call_type in LOOKUP_CALLS:
        return frozenset({"response_id"})  # from the path
    if call_type in ("aspeech", "transcription") and data.get("user") == LITELLM_PROXY_ADMIN_NAME:
        # the caller's user id (the master key's) when the body names none; a transcription's file, from its part
        return frozenset({"user", "file"} if call_type == "transcription" else {"user"})
    if call_type == "transcription":
        return frozenset({"file"})
    return frozenset()


def sealed_metadata_of(data: dict) -> object:
    """Where the seal travels: `metadata`, or on routes where `metadata` is the provider's field (Responses,
    Anthropic Messages) `litellm_metadata`, LiteLLM's own."""
    own = data.get("litellm_metadata")
    if isinstance(own, dict) and SEAL_KEY in own:
        return own
    return data.get("metadata")


def cache_namespace(metadata: dict) -> str:
    """The namespace of LiteLLM's cache entries for a request: its tenant's and endpoint's."""
    return f"gw:{metadata['gateway_tenant_id']}:{metadata.get('gateway_endpoint') or '-'}"


def _names(keys: list[str]) -> str:
    return json.dumps([key[:64] for key in keys[:10]])  # quoted and bounded: safe in a log line


class WrapperOnlyGuard(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.secret = secret_from_env()
        drop_litellm_tracebacks()
        if self.secret is None:
            logger.error("%s is not set: every request will be refused", SECRET_ENV)

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type):
        metadata = sealed_metadata_of(data)
        reason = refusal_reason(self.secret, metadata) or body_refusal(data, metadata, str(call_type))
        if reason is not None:
            logger.warning("refused a %s request that did not come through the wrapper: %s", call_type, reason)
            raise HTTPException(status_code=403, detail={"error": REFUSAL})
        if metadata["gateway_tenant_id"] == WARM_UP_TENANT:  # the wrapper's warm-up: this far, and no provider call
            raise HTTPException(status_code=403, detail={"error": "warm-up call: stopped before any provider"})
        # LiteLLM's own cache (litellm_settings.cache), when on: its keys are not a tenant's unless namespaced, and a
        # namespace could come from the request (`cache`, refused above as unsealed, or metadata): always the
        # tenant's and endpoint's, so no tenant can read another's entries (its first choice is `cache`'s, refused).
        metadata["redis_namespace"] = cache_namespace(metadata)
        if logger.isEnabledFor(logging.DEBUG):  # what LiteLLM was told, for operators (and tests) who ask
            accepted = {key: metadata.get(key) for key in SEALED_KEYS}
            accepted["user"] = data.get("user")
            logger.debug("gateway_request %s", json.dumps({"call_type": str(call_type), **accepted}, sort_keys=True))
        return data

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data: dict):
        """The stream as it comes; cut before its end (the wrapper hung up), the concurrency slots the wrapper sealed
        into it are given back once the provider's stream is closed (custom_callbacks/slot_release.py)."""
        metadata = sealed_metadata_of(request_data)
        release = metadata.get("gateway_release") if isinstance(metadata, dict) else None
        ended = False
        try:
            async for chunk in response:
                yield chunk
            ended = True
        finally:
            if release and not ended:
                await release_after_close(response, release)
