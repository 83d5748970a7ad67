"""The resilience policy as LiteLLM's control fields (wrapper/routing/resilience.py): what each class of error
gets, and fallbacks only to what the tenant may use."""

from __future__ import annotations

from wrapper.config.models import ResiliencePolicy, Tenant
from wrapper.routing.catalog import ModelCatalog
from wrapper.routing.resilience import controls

CATALOG = ModelCatalog(frozenset({"main", "spare", "secret", "mini", "max"}), {"alias-of-spare": "spare"},
                       tiers={"cheap": ("mini",), "frontier": ("max",)})
TENANT = Tenant(models=["main", "spare", "mini", "max"])


def policy(**fields) -> ResiliencePolicy:
    return ResiliencePolicy.model_validate(fields)


def test_no_policy_sends_nothing_so_litellms_router_settings_apply():
    assert controls(policy(), "main", CATALOG, TENANT) == {}


def test_each_class_gets_its_count_and_a_client_error_none():
    fields = controls(policy(retries={"rate_limited": 3, "server_error": 1}), "main", CATALOG, TENANT)
    per_class = fields["model_group_retry_policy"]["main"]
    assert per_class["RateLimitErrorRetries"] == 3 and per_class["InternalServerErrorRetries"] == 1
    assert per_class["ServiceUnavailableErrorRetries"] == 1 and per_class["TimeoutErrorRetries"] == 0
    assert all(per_class[name] == 0 for name in ("BadRequestErrorRetries", "AuthenticationErrorRetries",
                                                  "NotFoundErrorRetries", "ContentPolicyViolationErrorRetries"))
    # No connection retries: LiteLLM needs num_retries != 0 to apply the policy, so unclassed errors get 0 explicitly.
    assert fields["num_retries"] == 3 and per_class["DefaultRetries"] == 0


def test_connection_retries_are_litellms_num_retries_for_what_it_has_no_class_for():
    fields = controls(policy(retries={"connection": 2, "rate_limited": 1}), "main", CATALOG, TENANT)
    assert fields["num_retries"] == 2 and "DefaultRetries" not in fields["model_group_retry_policy"]["main"]
    assert controls(policy(retries={}), "main", CATALOG, TENANT)["num_retries"] == 0  # all 0: nothing is retried


def test_fallbacks_are_only_groups_the_tenant_may_use_tiers_expanded_and_each_gets_the_retries():
    fields = controls(policy(fallbacks=["secret", "alias-of-spare", "main", "frontier", "nowhere"],
                             retries={"server_error": 1}), "main", CATALOG, TENANT)
    assert fields["fallbacks"] == [{"main": ["spare", "max"]}]  # not secret (not the tenant's), not itself
    assert set(fields["model_group_retry_policy"]) == {"main", "spare", "max"}
    assert controls(policy(fallbacks=[]), "main", CATALOG, TENANT) == {"fallbacks": []}  # none, whatever LiteLLM says
    assert controls(policy(fallbacks=["secret"]), "main", CATALOG, TENANT) == {"fallbacks": []}


def test_the_attempt_timeout_is_litellms_timeout():
    assert controls(policy(attempt_timeout_seconds=12.5), "main", CATALOG, TENANT) == {"timeout": 12.5}
