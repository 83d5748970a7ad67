"""`model: auto`: a request sent to the cheapest tier that can answer it, by the complexity of its task.

Tiers are model groups of litellm_config.yaml marked with `model_info.gateway_tier`; the endpoint's routing policy
(gateway.yaml `routing`) gives each tier the lowest complexity score it takes (wrapper/routing/complexity.py).
The highest tier a request's score reaches is chosen, and within it the first model group the tenant may use; a
tier the tenant may use none of gives way to the nearest one it may (a lower one first). The decision (tier,
score, the cues behind it, the model) goes in the audit record, the metrics (gateway_policy_decisions, by tier)
and the `x-gateway-route` header. Step 5 (routing/step.py) then checks the chosen model like any other.
"""

from __future__ import annotations

from wrapper.config import Mode
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.pipeline import StepResult
from wrapper.routing.catalog import ModelCatalog
from wrapper.routing.complexity import classify

AUTO = "auto"
DEFAULT_THRESHOLD = 0.35  # the frontier tier's lowest score by default (RoutingPolicy)
ROUTED = frozenset({"chat", "messages", "responses", "completions"})  # routes whose task a prompt describes


class TierRoute:
    name = "tier"

    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog

    def mode(self, ctx: RequestContext) -> Mode:
        policy, model = ctx.policy.routing, ctx.body.get("model")
        if model == AUTO:  # it names no model to serve: routed whenever routing is on at all
            return Mode.off if policy.mode is Mode.off else Mode.enforce
        if ctx.route.name not in ROUTED or not (policy.every_request or policy.mode is Mode.shadow):
            return Mode.off
        return policy.mode

    async def request(self, ctx: RequestContext) -> StepResult:
        text, turns = last_user_text(ctx.route.name, ctx.body)
        complexity = classify(text, turns, tools=bool(ctx.body.get("tools")))
        tiers = sorted(ctx.policy.routing.tiers.items(), key=lambda item: item[1])
        wanted = max((i for i, (_, lowest) in enumerate(tiers) if complexity.score >= lowest), default=0)
        tier, model = self._usable(ctx, [name for name, _ in tiers], wanted)
        detail = {"tier": tier, "score": complexity.score, "reason": complexity.reason(), "model": model}
        if tier != tiers[wanted][0]:
            detail["wanted"] = tiers[wanted][0]
        if self.mode(ctx) is Mode.enforce:  # in shadow (on a copy of the body), nothing the client sees changes
            ctx.response_headers["x-gateway-route"] = f"tier={tier}; score={complexity.score:.2f}; model={model}"
        ctx.body["model"] = model
        return StepResult(tier, detail)

    def _usable(self, ctx: RequestContext, tiers: list[str], wanted: int) -> tuple[str, str]:
        """The tier to use (the wanted one, else the nearest the tenant may use, lower first) and its model."""
        for index in sorted(range(len(tiers)), key=lambda i: (abs(i - wanted), i > wanted)):
            for group in self.catalog.tiers.get(tiers[index], ()):
                if self.catalog.allowed(ctx.tenant, group):
                    return tiers[index], group
        raise GatewayError(403, "model 'auto' found no tier with a model this tenant may use "
                           f"(tiers: {', '.join(tiers)}).", code="model_not_allowed", param="model")


def auto_available(catalog: ModelCatalog, ctx: RequestContext) -> bool:
    """Whether `model: auto` would be served for this caller: routing on, and a tier with a model it may use."""
    if ctx.policy.routing.mode is Mode.off:
        return False
    return any(catalog.allowed(ctx.tenant, group)
               for tier in ctx.policy.routing.tiers for group in catalog.tiers.get(tier, ()))


def last_user_text(route: str, body: dict) -> tuple[str, int]:
    """The last user message's text and the number of user messages, in the route's own request shape."""
    if route == "completions":
        prompt = body.get("prompt")
        return (prompt if isinstance(prompt, str) else " ".join(p for p in prompt or () if isinstance(p, str))), 1
    items = body.get("input") if route == "responses" else body.get("messages")
    if isinstance(items, str):  # a Responses input given as one string
        return items, 1
    users = [item for item in items or () if isinstance(item, dict) and item.get("role") == "user"]
    return (_text(users[-1].get("content")) if users else ""), len(users)


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else ()
    return "\n".join(part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str))
