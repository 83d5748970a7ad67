"""What gateway.yaml holds: tenants and their policies, API keys (hashes only), roles and org SSO."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from wrapper.config.base import Mode, _Strict
from wrapper.config.guardrails import GuardrailsPolicy

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class Role(StrEnum):
    app = "app"  # call models
    auditor = "auditor"  # read the audit log of its tenant
    finance = "finance"  # read costs of its tenant
    admin = "admin"  # everything, every tenant


# Records of requests that belong to no tenant (bad credentials, unknown tenant) go to this
# chain. Tenant ids cannot start with "_", so it never collides with a configured tenant.
SYSTEM_TENANT = "_system"


class AuditContent(StrEnum):
    none = "none"  # no content, only the facts of the request
    hash = "hash"  # SHA-256 of the canonical request and of the response as sent
    full = "full"  # the text itself (after PII redaction)


class AuditPolicy(_Strict):
    content: AuditContent = AuditContent.hash
    # closed: no committed record, no answer (503). open: the record goes to a local spool, replayed later.
    on_store_failure: Literal["closed", "open"] = "closed"
    retention_days: int | None = Field(None, ge=1)  # None keeps records forever
    legal_hold: bool = False  # blocks any retention cut




class PiiAction(StrEnum):
    redact = "redact"  # each value becomes its type: <EMAIL_ADDRESS>
    pseudonymize = "pseudonymize"  # numbered per request (<EMAIL_ADDRESS_1>), restored in the answer
    block = "block"  # 400 naming the types found, nothing forwarded


# The types the gateway recognises by itself (wrapper/pii/recognizers.py); tenants may add their own.
PII_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
                "API_KEY", "AWS_ACCESS_KEY_ID", "JWT", "PRIVATE_KEY", "PASSWORD")
# Found only when named-entity recognition is on (GATEWAY_PII_NER_MODEL).
NER_ENTITIES = ("PERSON", "LOCATION")


class PiiRecognizer(_Strict):
    """A tenant's own pattern, e.g. employee ids: {entity: EMPLOYEE_ID, patterns: ["EMP-\\d{6}"]}."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,47}$")
    patterns: tuple[str, ...] = Field(min_length=1)
    score: float = Field(0.8, gt=0, le=1)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return patterns


class PiiPolicy(_Strict):
    mode: Mode = Mode.off
    action: PiiAction = PiiAction.redact
    entities: tuple[str, ...] | None = None  # the types to look for; None: every built-in and custom one
    system_prompts: bool = True  # scan system messages too
    # closed: when detection fails the request fails (503). open: it goes on unscanned, and the record says so.
    on_failure: Literal["closed", "open"] = "closed"
    recognizers: tuple[PiiRecognizer, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _action_as_mode(cls, data: object) -> object:
        """Files written before modes name the action as the mode (`mode: redact`): that means enforce it."""
        if isinstance(data, dict) and data.get("mode") in PiiAction.__members__:
            data = {**data, "action": data["mode"], "mode": Mode.enforce.value}
        return data

    @model_validator(mode="after")
    def _known_entities(self) -> PiiPolicy:
        known = {*PII_ENTITIES, *NER_ENTITIES, *(r.entity for r in self.recognizers)}
        unknown = sorted(set(self.entities or ()) - known)
        if unknown:
            raise ValueError(f"unknown PII entity types {unknown}; known: {sorted(known)}")
        return self


FIELD_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class FieldsPolicy(_Strict):
    """Provider-specific request fields, beyond the OpenAI API, that a tenant's requests may carry (default: none).

    They pass to the provider as sent (and are scanned for PII); no field LiteLLM acts on may be named.
    """

    allow: frozenset[str] = frozenset()

    @field_validator("allow")
    @classmethod
    def _names(cls, names: frozenset[str]) -> frozenset[str]:
        from wrapper.routes import LITELLM_OWNED

        for name in sorted(names):
            if not re.match(FIELD_NAME, name):
                raise ValueError(f"field name {name!r} must match {FIELD_NAME}")
            if name in LITELLM_OWNED:
                raise ValueError(f"{name!r} is a field LiteLLM acts on: only the gateway sets it")
        return names


class LimitSet(_Strict):
    """Limits of one scope (the tenant, an endpoint, each user, each key); each one optional."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)  # prompt + completion, reserved up front, settled after
    concurrency: int | None = Field(None, ge=1)  # requests in flight at once
    usd_per_day: float | None = Field(None, gt=0)  # calendar day, UTC
    usd_per_month: float | None = Field(None, gt=0)  # calendar month, UTC


class LimitsPolicy(LimitSet):
    """Admission (wrapper/limits). Its own limits are the tenant's, counted across all its requests; `per_user` and
    `per_key` apply to each user and each API key on their own; an endpoint's `limits` add its own counters."""

    mode: Mode = Mode.off
    # closed: when the store (Redis) cannot be reached in time the request is refused (503); open: it goes on
    on_store_failure: Literal["closed", "open"] = "closed"
    warn_at_percent: int = Field(80, ge=1, le=100)  # a budget used this far: a warning header and metric
    max_tokens: int = Field(4096, ge=1)  # the completion reserved when a request sets no max_tokens
    per_user: LimitSet = Field(default_factory=LimitSet)
    per_key: LimitSet = Field(default_factory=LimitSet)


class RoutingPolicy(_Strict):
    """`model: auto` (wrapper/routing/tiers.py): each request scored by its complexity and sent to a tier's model."""

    # off: `model: auto` is refused. shadow: every request that names a model is scored too, and the tier it
    # would get recorded; it is served as named. enforce: `model: auto` is routed (in shadow as well, as it names
    # no model to serve), and with `every_request` every request is, whatever model it names.
    mode: Mode = Mode.enforce
    # Each tier (a `model_info.gateway_tier` of litellm_config.yaml) and the lowest score it takes; the highest tier a
    # request's score reaches wins.
    tiers: dict[str, float] = Field(default_factory=lambda: {"cheap": 0.0, "frontier": 0.35}, min_length=1)
    every_request: bool = False

    @model_validator(mode="after")
    def _scores_in_range(self) -> RoutingPolicy:
        if any(not 0.0 <= score <= 1.0 for score in self.tiers.values()):
            raise ValueError("routing.tiers: each tier's lowest score is between 0 and 1")
        return self


class Retries(_Strict):
    """Attempts after the first, per class of error (a client error, 4xx, is never retried)."""

    rate_limited: int = Field(0, ge=0, le=10)  # 429, after the provider's Retry-After (LiteLLM caps the wait)
    server_error: int = Field(0, ge=0, le=10)  # 500 and 503
    timeout: int = Field(0, ge=0, le=10)  # an attempt past attempt_timeout_seconds
    connection: int = Field(0, ge=0, le=10)  # the provider unreachable, and other 5xx (502, 504)


class ResiliencePolicy(_Strict):
    """How LiteLLM retries and falls back for this tenant or endpoint (wrapper/routing/resilience.py). Unset, the
    router settings of litellm_config.yaml apply; set, these travel with each request as the gateway's own control
    fields (a client can never set them)."""

    retries: Retries | None = None
    attempt_timeout_seconds: float | None = Field(None, gt=0, le=3600)  # each attempt, first token to last byte
    # The whole request, retries, fallbacks and hedge included, until its answer (a stream: its first content);
    # past it the client gets 504 deadline_exceeded (the wrapper's own clock).
    deadline_seconds: float | None = Field(None, gt=0, le=3600)
    # Model groups or tiers tried in order when the request's own group fails (after its retries); only those the
    # tenant may use. Empty: none, whatever litellm_config.yaml says.
    fallbacks: tuple[str, ...] | None = None
    # No first content by then: one more attempt on the first fallback group; the first to produce content wins
    # (wrapper/upstream/hedge.py). Needs a fallback the tenant may use.
    hedge_after_ms: int | None = Field(None, ge=1, le=600_000)


class CachePolicy(_Strict):
    """The cache layers (wrapper/cache): each off, shadow (looked up and stored; a hit is recorded, not served) or
    enforce. Only successful answers are kept, and only when `temperature` is 0 (or absent, with
    `when_temperature_absent`); never answers with tool calls unless `tool_calls`."""

    exact: Mode = Mode.off  # the same request, byte for byte once canonical
    template: Mode = Mode.off  # the same template with the same slot values (numbers, dates, ids ...)
    semantic: Mode = Mode.off  # a question that means the same, same slot values, not told apart (meaning.py)
    semantic_threshold: float = Field(0.85, ge=0.5, le=1.0)  # the cosine a hit needs (bench/cache_accuracy.py)
    ttl_seconds: int = Field(3600, ge=1, le=30 * 86400)
    max_answer_bytes: int = Field(262_144, ge=1024, le=16 * 1024 * 1024)  # a larger answer is not kept
    when_temperature_absent: bool = False
    tool_calls: bool = False

    @property
    def on(self) -> bool:
        return Mode.enforce in (self.exact, self.template, self.semantic) or \
            Mode.shadow in (self.exact, self.template, self.semantic)


@dataclass(frozen=True)
class EndpointPolicies:
    """Every step's policy as it applies to one endpoint: the tenant's, with the endpoint's overrides."""

    pii: PiiPolicy
    fields: FieldsPolicy
    limits: LimitsPolicy
    endpoint_limits: LimitSet  # what the endpoint itself limits, counted for the endpoint alone
    routing: RoutingPolicy = RoutingPolicy()
    resilience: ResiliencePolicy = ResiliencePolicy()
    cache: CachePolicy = CachePolicy()
    guardrails: GuardrailsPolicy = GuardrailsPolicy()


class Endpoint(_Strict):
    """One of a tenant's app endpoints. A policy given here overrides the named settings of the tenant's."""

    pii: dict = Field(default_factory=dict)
    fields: dict = Field(default_factory=dict)
    limits: dict = Field(default_factory=dict)
    routing: dict = Field(default_factory=dict)
    resilience: dict = Field(default_factory=dict)
    cache: dict = Field(default_factory=dict)
    guardrails: dict = Field(default_factory=dict)


class Tenant(_Strict):
    name: str = ""  # display name
    models: list[str] = Field(default_factory=list)  # allowed model names; "*" allows all (wrapper.routing)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)  # the app endpoints the tenant owns
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    fields: FieldsPolicy = Field(default_factory=FieldsPolicy)
    limits: LimitsPolicy = Field(default_factory=LimitsPolicy)
    routing: RoutingPolicy = Field(default_factory=RoutingPolicy)
    resilience: ResiliencePolicy = Field(default_factory=ResiliencePolicy)
    cache: CachePolicy = Field(default_factory=CachePolicy)
    guardrails: GuardrailsPolicy = Field(default_factory=GuardrailsPolicy)
    _policies: dict[str | None, EndpointPolicies] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _earlier_forms(cls, data: object) -> object:
        """Files written before endpoints held policies still load: a list of endpoint names, and `pii.endpoints`
        (endpoint -> action) for per-endpoint PII."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("endpoints"), list):
            data["endpoints"] = {name: {} for name in data["endpoints"]}
        pii = data.get("pii")
        if isinstance(pii, dict) and isinstance(pii.get("endpoints"), dict):
            data["pii"] = {key: value for key, value in pii.items() if key != "endpoints"}
            endpoints = {name: dict(value or {}) for name, value in (data.get("endpoints") or {}).items()}
            for name, action in pii["endpoints"].items():
                if name not in endpoints:
                    raise ValueError(f"pii.endpoints names an endpoint the tenant does not have: {name!r}")
                endpoints[name]["pii"] = {**endpoints[name].get("pii", {}), "mode": action}
            data["endpoints"] = endpoints
        return data

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Tenant:
        self._resolved()  # a bad override is a config error at load, naming the endpoint
        return self

    @field_serializer("endpoints")
    def _compact_endpoints(self, endpoints: dict[str, Endpoint]) -> dict[str, dict]:
        return {name: endpoint.model_dump(exclude_defaults=True) for name, endpoint in endpoints.items()}

    def model_post_init(self, context) -> None:
        self._policies.update(self._resolved())

    def _resolved(self) -> dict[str | None, EndpointPolicies]:
        policies: dict[str | None, EndpointPolicies] = {None: EndpointPolicies(self.pii, self.fields, self.limits,
                                                                               LimitSet(), self.routing,
                                                                               self.resilience, self.cache,
                                                                               self.guardrails)}
        for name, endpoint in self.endpoints.items():
            where = f"endpoints.{name}.limits"
            own = {key: value for key, value in endpoint.limits.items() if key in LimitSet.model_fields}
            policies[name] = EndpointPolicies(_overridden(self.pii, endpoint.pii, f"endpoints.{name}.pii"),
                                              _overridden(self.fields, endpoint.fields, f"endpoints.{name}.fields"),
                                              _overridden(self.limits.model_copy(update=dict.fromkeys(
                                                  LimitSet.model_fields)), endpoint.limits, where),
                                              _overridden(LimitSet(), own, where),
                                              _overridden(self.routing, endpoint.routing, f"endpoints.{name}.routing"),
                                              _overridden(self.resilience, endpoint.resilience,
                                                          f"endpoints.{name}.resilience"),
                                              _overridden(self.cache, endpoint.cache, f"endpoints.{name}.cache"),
                                              _overridden(self.guardrails, endpoint.guardrails,
                                                          f"endpoints.{name}.guardrails"))
        return policies

    def policy(self, endpoint: str | None) -> EndpointPolicies:
        """The policies for a request of this endpoint (None: a request that names none gets the tenant's)."""
        return self._policies.get(endpoint) or self._policies[None]


def _overridden(policy: BaseModel, overrides: dict, where: str) -> BaseModel:
    if not overrides:
        return policy
    try:
        return type(policy).model_validate({**policy.model_dump(), **overrides})
    except ValidationError as exc:
        raise ValueError(f"{where}: {exc.errors()[0]['msg']}") from None


class ApiKey(_Strict):
    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    tenant: str
    name: str
    role: Role = Role.app
    endpoint: str | None = None
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    created_at: datetime | None = None
    expires_at: datetime | None = None  # refused from then on (set by --expires, and on the old key by a rotation)
    revoked_at: datetime | None = None
    rotated_from: str | None = None  # the key this one replaced (`gateway keys rotate`)

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < _aware(self.expires_at))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # a time written without an offset is UTC


class OidcClaims(_Strict):
    tenant: str = "tenant"
    user: str = "sub"
    roles: str = "roles"


class Oidc(_Strict):
    issuer: str
    audience: str
    jwks_url: str
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_seconds: int = Field(30, ge=0, le=300)
    jwks_refresh_min_seconds: float = Field(30, ge=0)  # at most one refetch per interval on unknown kid
    claims: OidcClaims = Field(default_factory=OidcClaims)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        refused = [a for a in algorithms if a not in allowed]
        if refused or not algorithms:
            raise ValueError(f"only asymmetric algorithms are accepted ({sorted(allowed)}); refused: {refused}")
        return algorithms


class GatewayConfig(_Strict):
    tenants: dict[str, Tenant] = Field(default_factory=dict)
    keys: list[ApiKey] = Field(default_factory=list)
    oidc: Oidc | None = None
    _keys_by_id: dict[str, ApiKey] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context) -> None:
        self._keys_by_id.update({key.id: key for key in self.keys})

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, tenants: dict[str, Tenant]) -> dict[str, Tenant]:
        for tenant_id in tenants:
            if not re.match(NAME_PATTERN, tenant_id):
                raise ValueError(f"tenant id {tenant_id!r} must match {NAME_PATTERN}")
        return tenants

    @model_validator(mode="after")
    def _keys_fit_tenants(self) -> GatewayConfig:
        seen: set[str] = set()
        for index, key in enumerate(self.keys):
            if key.id in seen:
                raise ValueError(f"keys[{index}]: duplicate key id {key.id}")
            seen.add(key.id)
            tenant = self.tenants.get(key.tenant)
            if tenant is None:
                raise ValueError(f"keys[{index}] ({key.id}): unknown tenant {key.tenant!r}")
            if key.endpoint is not None and key.endpoint not in tenant.endpoints:
                raise ValueError(f"keys[{index}] ({key.id}): endpoint {key.endpoint!r} is not one of tenant {key.tenant!r}'s")
        return self

    def key_by_id(self, key_id: str) -> ApiKey | None:
        return self._keys_by_id.get(key_id)
