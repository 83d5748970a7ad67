"""How LiteLLM retries and falls back for a request: the endpoint's resilience policy, as LiteLLM's control fields.

LiteLLM does the provider plumbing (retries, backoff honouring Retry-After, fallbacks, cooldowns); the gateway
only says, per request, how much of it this endpoint gets. The fields travel sealed with the request (a client
can never send them: wrapper/routes' allow-lists, custom_callbacks.guard):
- `num_retries` and `model_group_retry_policy`: attempts after the first per class of error. LiteLLM 1.108.5
  counts 429 (RateLimitError), 500 and 503 (InternalServerError, ServiceUnavailableError) and timeouts per class;
  a client error (400, 401, 404, 422, a content-policy refusal) gets 0; anything it has no class for (the
  provider unreachable, other 5xx) takes `num_retries`, set to the `connection` count. LiteLLM applies a policy
  only when `num_retries` is not 0, so when `connection` is 0 and another class is not, unclassed errors get an
  explicit 0 (`DefaultRetries`). LiteLLM may still try another deployment of the same group after a 401 or 403
  (a key of that deployment), never the same one again;
- `timeout`: each attempt's;
- `fallbacks`: the groups tried in order once the request's own group has failed, each with the same retries;
  only groups the tenant may use, so a fallback is never a way around the allow-list.
"""

from __future__ import annotations

from wrapper.config import Tenant
from wrapper.config.models import ResiliencePolicy
from wrapper.routing.catalog import ModelCatalog


def controls(policy: ResiliencePolicy, group: str, catalog: ModelCatalog, tenant: Tenant) -> dict:
    """The control fields for a request served by model group `group` (empty: LiteLLM's router settings apply)."""
    fields: dict = {}
    chain: list[str] = []
    if policy.fallbacks is not None:
        for name in policy.fallbacks:
            for candidate in catalog.tiers.get(name) or (catalog.resolve(name),):  # a tier: its groups, in order
                if candidate and candidate != group and candidate not in chain and catalog.allowed(tenant, candidate):
                    chain.append(candidate)
        fields["fallbacks"] = [{group: chain}] if chain else []
    if policy.retries is not None:
        retries = policy.retries
        per_class = {"RateLimitErrorRetries": retries.rate_limited, "InternalServerErrorRetries": retries.server_error,
                     "ServiceUnavailableErrorRetries": retries.server_error, "TimeoutErrorRetries": retries.timeout,
                     "BadRequestErrorRetries": 0, "AuthenticationErrorRetries": 0, "NotFoundErrorRetries": 0,
                     "ContentPolicyViolationErrorRetries": 0}
        most = max(retries.rate_limited, retries.server_error, retries.timeout)
        if retries.connection or not most:
            fields["num_retries"] = retries.connection
        else:
            fields["num_retries"], per_class["DefaultRetries"] = most, 0
        fields["model_group_retry_policy"] = {name: per_class for name in (group, *chain)}
    if policy.attempt_timeout_seconds is not None:
        fields["timeout"] = policy.attempt_timeout_seconds
    return fields
