"""Step 5 of the flow: the model LiteLLM is asked for, aliases resolved, within the tenant's allow-list; and how
LiteLLM may retry and fall back for it (routing/resilience.py)."""

from __future__ import annotations

from wrapper.config import Mode
from wrapper.context import RequestContext
from wrapper.pipeline import StepResult
from wrapper.routing.catalog import ModelCatalog
from wrapper.routing.resilience import controls


class ModelRoute:
    name = "route"

    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog

    def mode(self, ctx: RequestContext) -> Mode:
        return Mode.enforce  # the allow-list is a boundary between tenants: never off, never only watched

    async def request(self, ctx: RequestContext) -> StepResult:
        ctx.model_group = self.catalog.route(ctx.tenant, ctx.body["model"])  # 403 or 404 when it may not be served
        ctx.controls = controls(ctx.policy.resilience, ctx.model_group, self.catalog, ctx.tenant)
        return StepResult("routed")
