"""Tenant isolation of stored objects: a step that is always enforced on the routes that store them.

Request half: every id the request names (`previous_response_id`, input items'
ids, item references) must be one sealed for the caller's tenant; it is
replaced by the id inside, or the request is a 404, as for an id that does not
exist. Response half: every id the answer gives (the response's, its output
items', in whole answers and in each streamed event) is sealed for the tenant.
The same functions serve the retrieve, delete and input-items calls
(wrapper.ownership.lookups).
"""

from __future__ import annotations

import orjson

from wrapper.config.models import Mode
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.ownership.ids import ObjectIds
from wrapper.pipeline import StepResult
from wrapper.upstream.sse import event_data, json_object


def not_found(kind: str, object_id: str, param: str | None = None) -> GatewayError:
    shown = object_id if len(object_id) <= 200 else object_id[:200] + "..."
    return GatewayError(404, f"{kind} with id '{shown}' not found.", type="invalid_request_error", param=param,
                        code="previous_response_not_found" if param == "previous_response_id" else "not_found")


class OwnershipStep:
    name = "ownership"

    def __init__(self, ids: ObjectIds) -> None:
        self.ids = ids

    def mode(self, ctx: RequestContext) -> Mode:
        return Mode.enforce if ctx.route.name == "responses" else Mode.off  # not a policy: always, where it applies

    async def request(self, ctx: RequestContext) -> StepResult:
        tenant, body = ctx.principal.tenant, ctx.body
        previous = body.get("previous_response_id")
        if previous:
            body["previous_response_id"] = self.opened(tenant, body["previous_response_id"], "Previous response",
                                                       "previous_response_id")
        for index, item in enumerate(body.get("input") if isinstance(body.get("input"), list) else ()):
            if item.get("id"):
                item["id"] = self.opened(tenant, item["id"], "Item", f"input[{index}].id")
        return StepResult("sealed", half=SealIds(self.ids, tenant, previous))

    def opened(self, tenant: str, outer: str, kind: str, param: str | None = None) -> str:
        inner = self.ids.open(tenant, outer)
        if inner is None:
            raise not_found(kind, outer, param)
        return inner


class SealIds:
    """The response half: ids in the answer, sealed for the tenant."""

    def __init__(self, ids: ObjectIds, tenant: str, previous: str | None = None) -> None:
        self.ids, self.tenant = ids, tenant
        self.previous = previous  # the previous response's id as the client gave it: the one it knows

    def answer(self, body: bytes) -> bytes:
        answer = json_object(body)
        if answer is None:
            return body
        self.response(answer)
        return orjson.dumps(answer)

    def event(self, event: bytes) -> bytes:
        parsed = event_data(event)
        if parsed is None:
            return event
        head, payload = parsed
        if isinstance(payload.get("response"), dict):
            self.response(payload["response"])
        if isinstance(payload.get("item"), dict):
            self._seal(payload["item"], "id")
        self._seal(payload, "item_id")
        return head + b"data: " + orjson.dumps(payload) + b"\n\n"

    def end(self) -> bytes:
        return b""

    def refused(self, refusal: GatewayError) -> GatewayError:
        """The provider no longer has the previous response (deleted): LiteLLM's 404 names the provider's id and its
        own deployment; the client is told of the id it knows, as for one that was never its tenant's."""
        if self.previous and refusal.status == 404:
            return not_found("Previous response", self.previous, "previous_response_id")
        return refusal

    def response(self, response: dict) -> None:
        """A response object (or a deletion's answer): its id, the previous one's, its output items'."""
        self._seal(response, "id")
        if self.previous and response.get("previous_response_id"):
            response["previous_response_id"] = self.previous
        else:  # the provider's id of it (LiteLLM passes it on as the provider gave it)
            self._seal(response, "previous_response_id")
        for item in response.get("output") or ():
            if isinstance(item, dict):
                self._seal(item, "id")

    def items(self, listing: dict) -> None:
        """A list of input items."""
        for item in listing.get("data") or ():
            if isinstance(item, dict):
                self._seal(item, "id")
        self._seal(listing, "first_id")
        self._seal(listing, "last_id")

    def _seal(self, container: dict, key: str) -> None:
        if isinstance(container.get(key), str) and container[key]:
            container[key] = self.ids.seal(self.tenant, container[key])
