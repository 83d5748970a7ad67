"""One Langfuse trace per model call, for finance's cost views by tenant, user, endpoint and model.

The trace carries `user_id` (the gateway's user), tags `tenant:<id>`,
`endpoint:<name>` and `tier:<model group>`, metadata with the tenant and request
ids, and a generation per attempt with the model, token usage and LiteLLM's cost:
a retried or fallen-back request is one trace whose failed attempts show as
ERROR generations beside the one that answered, and a stream the client left
shows what LiteLLM billed for the part produced. The trace id is derived from
the tenant and the gateway's request id (`Langfuse.create_trace_id(seed=
"<tenant>:<request id>")`), so an audit record leads to its trace, and a client
choosing its own request id cannot land in another tenant's trace. No prompt or
answer text is sent: Langfuse gets the facts, the audit log keeps the content by
each tenant's policy.

The Langfuse SDK exports over OpenTelemetry from a background thread with a
bounded queue: a slow or absent Langfuse drops traces, it never holds a request.
Off unless LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set (LANGFUSE_BASE_URL
names the server).
"""

from __future__ import annotations

import logging
import os

from litellm.integrations.custom_logger import CustomLogger

logger = logging.getLogger("custom_callbacks.langfuse")


class LangfuseTraces(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.client = None
        if os.environ.get("LANGFUSE_PUBLIC_KEY") and os.environ.get("LANGFUSE_SECRET_KEY"):
            from langfuse import Langfuse

            self.client = Langfuse()

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._trace(kwargs, failed=False)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time) -> None:
        self._trace(kwargs, failed=True)

    def _trace(self, kwargs: dict, failed: bool) -> None:
        if self.client is None:
            return
        try:
            from langfuse import propagate_attributes

            call = kwargs.get("standard_logging_object") or {}
            metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
            tenant, endpoint = metadata.get("gateway_tenant_id"), metadata.get("gateway_endpoint")
            tier = call.get("model_group")
            tags = [f"tenant:{tenant}"] + [f"endpoint:{endpoint}"] * bool(endpoint) + [f"tier:{tier}"] * bool(tier)
            ids = {"tenant_id": str(tenant), "request_id": str(metadata.get("gateway_request_id"))}
            usage = {"input": int(call.get("prompt_tokens") or 0), "output": int(call.get("completion_tokens") or 0)}
            trace_id = self.client.create_trace_id(seed=f"{ids['tenant_id']}:{ids['request_id']}")
            error = (call.get("error_information") or {}).get("error_class") if failed else None
            with propagate_attributes(user_id=metadata.get("gateway_user_id"), tags=tags, metadata=ids,
                                      trace_name="gateway-request"):
                generation = self.client.start_observation(
                    trace_context={"trace_id": trace_id}, name="model-call", as_type="generation",
                    model=call.get("model") or kwargs.get("model"), usage_details=usage,
                    cost_details={"total": float(call.get("response_cost") or 0.0)},
                    level="ERROR" if failed else None, status_message=error or None, metadata=ids,
                )
                generation.end()
        except Exception as exc:  # tracing must never fail a call
            logger.warning("could not trace a call to Langfuse (%s)", type(exc).__name__)
