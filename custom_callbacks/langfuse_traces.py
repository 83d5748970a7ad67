"""One Langfuse trace per model call, for finance's cost views by tenant, user, endpoint and model.

The trace carries `user_id` (the gateway's user), tags `tenant:<id>`,
`endpoint:<name>`, `tier:<model group>` and for `model: auto` `route:<tier>`, metadata with the tenant and request
ids, and a generation per attempt with the model, token usage and LiteLLM's cost:
a retried or fallen-back request is one trace whose failed attempts show as
ERROR generations beside the one that answered, and a stream the client left
shows what LiteLLM billed for the part produced. The trace id is derived from
the tenant and the gateway's request id (`Langfuse.create_trace_id(seed=
"<tenant>:<request id>")`), so an audit record leads to its trace, and a client
choosing its own request id cannot land in another tenant's trace. No prompt or
answer text is sent: Langfuse gets the facts, the audit log keeps the content by
each tenant's policy.

The Langfuse SDK runs in a process of its own (custom_callbacks.langfuse_exporter):
LiteLLM's process, which serves every request of the pod, only writes a line of
facts to a pipe. A slow or absent Langfuse drops traces, it never holds a
request. Off unless LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set
(LANGFUSE_BASE_URL names the server).
"""

from __future__ import annotations

import logging
import os

from litellm.integrations.custom_logger import CustomLogger

from custom_callbacks.langfuse_exporter import ExporterProcess
from custom_callbacks.seal import SEAL_KEY, WARM_UP_TENANT

logger = logging.getLogger("custom_callbacks.langfuse")


class LangfuseTraces(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.exporter = None
        if os.environ.get("LANGFUSE_PUBLIC_KEY") and os.environ.get("LANGFUSE_SECRET_KEY"):
            self.exporter = ExporterProcess()

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._trace(kwargs, failed=False)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._trace(kwargs, failed=True)

    def _trace(self, kwargs: dict, failed: bool) -> None:
        if self.exporter is None or _metadata(kwargs).get("gateway_tenant_id") == WARM_UP_TENANT:
            return
        try:
            self.exporter.send(call_facts(kwargs, failed))
        except Exception as exc:  # tracing must never fail a call
            logger.warning("could not trace a call to Langfuse (%s)", type(exc).__name__)


def _metadata(kwargs: dict) -> dict:
    """The metadata the wrapper sealed. On the Responses and Messages routes it is `litellm_metadata` and
    `metadata` is the client's own API field: that one is never read here, so a client cannot name a tenant."""
    params = kwargs.get("litellm_params") or {}
    for key in ("litellm_metadata", "metadata"):
        value = params.get(key)
        if isinstance(value, dict) and SEAL_KEY in value:
            return value
    return {}


def call_facts(kwargs: dict, failed: bool) -> dict:
    """What Langfuse is told of one call, from LiteLLM's logging payload: plain values, no text."""
    call = kwargs.get("standard_logging_object") or {}
    metadata = _metadata(kwargs)
    tenant, endpoint = metadata.get("gateway_tenant_id"), metadata.get("gateway_endpoint")
    tier = call.get("model_group")
    ids = {"tenant_id": str(tenant), "request_id": str(metadata.get("gateway_request_id"))}
    route = metadata.get("gateway_route")  # model: auto's tier, score and cues
    if isinstance(route, str):
        ids["route"] = route
    routed = [tag for tag in metadata.get("tags") or () if isinstance(tag, str) and tag.startswith("route:")]
    return {
        "trace_seed": f"{ids['tenant_id']}:{ids['request_id']}",
        "user_id": metadata.get("gateway_user_id"),
        "tags": [f"tenant:{tenant}"] + [f"endpoint:{endpoint}"] * bool(endpoint) + [f"tier:{tier}"] * bool(tier)
        + routed,
        "ids": ids,
        "model": call.get("model") or kwargs.get("model"),
        "usage": {"input": int(call.get("prompt_tokens") or 0), "output": int(call.get("completion_tokens") or 0)},
        "cost": float(call.get("response_cost") or 0.0),
        "level": "ERROR" if failed else None,
        "error": ((call.get("error_information") or {}).get("error_class") or None) if failed else None,
    }
