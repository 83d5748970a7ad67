"""gateway.yaml: tenants, API keys (hashes only), roles and org SSO, validated at load.

`ConfigStore` serves the current config and reloads it when the file changes
(checked with one stat per request, so a revocation takes effect on the next
request). A file that fails validation is rejected and logged, and the config
in force stays.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

logger = logging.getLogger("wrapper.config")

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class Role(StrEnum):
    app = "app"  # call models
    auditor = "auditor"  # read the audit log of its tenant
    finance = "finance"  # read costs of its tenant
    admin = "admin"  # everything, every tenant


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class PiiMode(StrEnum):
    off = "off"
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
    mode: PiiMode = PiiMode.off
    endpoints: dict[str, PiiMode] = Field(default_factory=dict)  # per endpoint, overriding `mode`
    entities: tuple[str, ...] | None = None  # the types to look for; None: every built-in and custom one
    system_prompts: bool = True  # scan system messages too
    # closed: when detection fails the request fails (503). open: it goes on unscanned, and the record says so.
    on_failure: Literal["closed", "open"] = "closed"
    recognizers: tuple[PiiRecognizer, ...] = ()

    @model_validator(mode="after")
    def _known_entities(self) -> PiiPolicy:
        known = {*PII_ENTITIES, *NER_ENTITIES, *(r.entity for r in self.recognizers)}
        unknown = sorted(set(self.entities or ()) - known)
        if unknown:
            raise ValueError(f"unknown PII entity types {unknown}; known: {sorted(known)}")
        return self

    def mode_for(self, endpoint: str | None) -> PiiMode:
        return self.endpoints.get(endpoint, self.mode) if endpoint else self.mode


FIELD_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class FieldsPolicy(_Strict):
    """Provider-specific request fields, beyond the OpenAI API, that a tenant's requests may carry (default: none).

    They pass to the provider as sent (and are scanned for PII); no field LiteLLM acts on may be named.
    """

    allow: tuple[str, ...] = ()
    endpoints: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # per endpoint, replacing `allow`
    _by_endpoint: dict[str | None, frozenset[str]] = PrivateAttr(default_factory=dict)

    @field_validator("allow")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from wrapper.request_fields import LITELLM_OWNED

        for name in names:
            if not re.match(FIELD_NAME, name):
                raise ValueError(f"field name {name!r} must match {FIELD_NAME}")
            if name in LITELLM_OWNED:
                raise ValueError(f"{name!r} is a field LiteLLM acts on: only the gateway sets it")
        return names

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, endpoints: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for names in endpoints.values():
            cls._names(names)
        return endpoints

    def model_post_init(self, context) -> None:
        self._by_endpoint[None] = frozenset(self.allow)
        self._by_endpoint.update({name: frozenset(names) for name, names in self.endpoints.items()})

    def for_endpoint(self, endpoint: str | None) -> frozenset[str]:
        return self._by_endpoint.get(endpoint, self._by_endpoint[None])


class Tenant(_Strict):
    name: str = ""  # display name
    models: list[str] = Field(default_factory=list)  # allowed model names; "*" allows all (wrapper.routing)
    endpoints: list[str] = Field(default_factory=list)  # the app endpoints the tenant owns
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    fields: FieldsPolicy = Field(default_factory=FieldsPolicy)

    @model_validator(mode="after")
    def _endpoints_are_own(self) -> Tenant:
        for section, named in (("pii", self.pii.endpoints), ("fields", self.fields.endpoints)):
            unknown = sorted(set(named) - set(self.endpoints))
            if unknown:
                raise ValueError(f"{section}.endpoints names endpoints the tenant does not have: {unknown}")
        return self


class ApiKey(_Strict):
    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    tenant: str
    name: str
    role: Role = Role.app
    endpoint: str | None = None
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    created_at: datetime | None = None
    revoked_at: datetime | None = None


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


class ConfigError(Exception):
    pass


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway.yaml; a missing file is an empty config (no tenants, nobody gets in)."""
    if not path.exists():
        return GatewayConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return validate_config(data, str(path))


def validate_config(data: dict, source: str) -> GatewayConfig:
    """Validate a parsed config; the error names the source and each bad field."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


class ConfigStore:
    """The config in force, reloaded when the file's stat changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.config = load_config(path)  # at start an invalid file is fatal, with the same clear message

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> GatewayConfig:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._reload()
        return self.config

    def _reload(self) -> None:
        try:
            self.config = load_config(self.path)
        except ConfigError as exc:
            logger.error("rejected the new gateway config, keeping the one in force: %s", exc)
            return
        logger.info("reloaded the gateway config: %d tenants, %d keys", len(self.config.tenants), len(self.config.keys))
