"""gateway.yaml: its models (tenants, policies, keys, SSO), loading and hot reload, and the CLI's edits (`edit`)."""

from wrapper.config.models import (
    NER_ENTITIES,
    PII_ENTITIES,
    SYSTEM_TENANT,
    ApiKey,
    AuditContent,
    AuditPolicy,
    Endpoint,
    EndpointPolicies,
    FieldsPolicy,
    GatewayConfig,
    Mode,
    Oidc,
    PiiAction,
    PiiPolicy,
    PiiRecognizer,
    Role,
    Tenant,
)
from wrapper.config.store import ConfigError, ConfigStore, load_config, validate_config

__all__ = [
    "NER_ENTITIES", "PII_ENTITIES", "SYSTEM_TENANT", "ApiKey", "AuditContent", "AuditPolicy", "ConfigError",
    "ConfigStore", "Endpoint", "EndpointPolicies", "FieldsPolicy", "GatewayConfig", "Mode", "Oidc", "PiiAction",
    "PiiPolicy", "PiiRecognizer", "Role", "Tenant",
    "load_config", "validate_config",
]
