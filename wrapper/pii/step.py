"""Step 4 of the flow: find personal data in what the request would send, and act on the endpoint's policy.

Every text the provider would read is scanned (the route's `user_texts`: for
chat, message contents, names, refusals and reasoning, tool-call arguments and
results, tool and function descriptions and parameter schemas, response_format
schemas, stop sequences, predicted output, `user`, metadata values and a
tenant's extra fields; system prompts unless the policy leaves them out). The
body is changed in place, so nothing downstream (LiteLLM, the provider, the
audit record) ever holds the raw values. The record gets the types and counts
found, never the values.
"""

from __future__ import annotations

import logging
from collections import Counter

from wrapper.config import Mode, PiiAction
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.pii.redact import Pseudonyms, find, replace
from wrapper.pii.restore import Restorer
from wrapper.pii.scanner import PiiScanner
from wrapper.pipeline import StepResult
from wrapper.routes import Unreadable

logger = logging.getLogger("wrapper.pii")


class PiiStep:
    name = "pii"

    def __init__(self, scanner: PiiScanner) -> None:
        self.scanner = scanner  # recognizers built once, at start

    def mode(self, ctx: RequestContext) -> Mode:
        return ctx.policy.pii.mode

    async def request(self, ctx: RequestContext) -> StepResult:
        policy = ctx.policy.pii
        try:
            slots = list(ctx.route.user_texts(ctx.body, ctx.policy.fields.allow, system=policy.system_prompts))
        except Unreadable as unreadable:
            raise GatewayError(400, f"With PII protection on, '{unreadable.param}' must be text the gateway can read "
                               "(not token ids or images).", param=unreadable.param, code="pii_unscannable_input") from None
        try:
            found = await find(slots, policy, self.scanner)
        except Exception as exc:  # a detector that fails must not let unscanned text through silently
            logger.error("PII detection failed (%s)", type(exc).__name__)
            if policy.on_failure == "closed":
                raise GatewayError(503, "PII detection is unavailable, so the request was not forwarded.",
                                   type="service_unavailable", code="pii_unavailable") from None
            ctx.pii = {"action": policy.action.value, "unscanned": True}
            return StepResult("unscanned")
        counts = dict(sorted(Counter(result.entity_type for _, _, results in found for result in results).items()))
        ctx.pii = {"action": policy.action.value, "found": counts}
        if not counts:
            return StepResult("pass", {"found": counts})
        if policy.action is PiiAction.block:
            return StepResult("block", {"found": counts}, refusal=GatewayError(
                400, f"The request contains data this endpoint may not send: {', '.join(counts)}.", code="pii_detected"))
        pseudonyms = Pseudonyms() if policy.action is PiiAction.pseudonymize else None
        replace(found, pseudonyms)
        restorer = Restorer(pseudonyms.originals(), ctx.route) if pseudonyms else None
        return StepResult(policy.action.value, {"found": counts}, half=restorer)
