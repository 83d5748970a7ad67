"""Resolve a request's credentials, once, to the Principal every later step uses."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from wrapper.auth import keys
from wrapper.auth.oidc import JwksCache, TokenInvalid, verify_token
from wrapper.config import GatewayConfig, Role
from wrapper.errors import GatewayError

logger = logging.getLogger("wrapper.auth")

ENDPOINT_HEADER = "x-gateway-endpoint"


class AuthError(GatewayError):
    """401: no or bad credentials. Says what a client needs, never which part of a credential was wrong."""

    def __init__(self, message: str = "Invalid credentials.") -> None:
        super().__init__(
            401, message, code="invalid_credentials",
            headers={"www-authenticate": 'Bearer realm="llm-gateway", error="invalid_token"'},
        )


def forbidden(message: str, code: str) -> GatewayError:
    return GatewayError(403, message, code=code)


@dataclass(frozen=True)
class Principal:
    tenant: str
    user: str | None
    endpoint: str | None
    roles: frozenset[Role]
    credential_id: str  # "key:<key id>" or "sso:<short hash of issuer and subject>"

    def require(self, role: Role) -> None:
        if role not in self.roles and Role.admin not in self.roles:
            raise forbidden(f"This credential may not do that (needs role '{role}').", "role_not_allowed")


def readable_tenants(principal: Principal, requested: str | None) -> list[str] | None:
    """The tenants whose records (audit, costs) this caller may read, None meaning all, narrowed to `requested`.

    An admin reads every tenant; an auditor or finance credential its own only.
    """
    if Role.admin in principal.roles:
        return [requested] if requested else None
    if requested and requested != principal.tenant:
        raise forbidden("This credential reads its own tenant's records only.", "tenant_not_allowed")
    return [principal.tenant]


async def authenticate(headers, config: GatewayConfig, jwks: JwksCache) -> Principal:
    credential = _bearer(headers.get("authorization")) or headers.get("x-api-key")
    if not credential:
        raise AuthError("Missing credentials: send `Authorization: Bearer <key or token>`.")
    if keys.looks_like_a_key(credential):
        tenant, user, roles, credential_id, bound_endpoint = _from_api_key(credential, config)
    elif credential.count(".") == 2 and config.oidc is not None:
        tenant, user, roles, credential_id, bound_endpoint = await _from_token(credential, config, jwks)
    else:
        raise AuthError()
    endpoint = _endpoint(headers.get(ENDPOINT_HEADER), bound_endpoint, config.tenants[tenant].endpoints)
    return Principal(tenant, user, endpoint, roles, credential_id)


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _from_api_key(presented: str, config: GatewayConfig):
    key_id = keys.key_id_of(presented)
    record = config.key_by_id(key_id) if key_id else None
    if record is None or not record.usable(datetime.now(UTC)) or not keys.matches(presented, record.hash):
        raise AuthError()
    return record.tenant, None, frozenset({record.role}), f"key:{record.id}", record.endpoint


async def _from_token(token: str, config: GatewayConfig, jwks: JwksCache):
    oidc = config.oidc
    try:
        claims = await verify_token(token, oidc, jwks)
    except TokenInvalid as exc:
        logger.info("refused an SSO token: %s", exc)
        raise AuthError() from None
    tenant = claims.get(oidc.claims.tenant)
    user = claims.get(oidc.claims.user)
    if not isinstance(tenant, str) or not isinstance(user, str) or not user:
        raise AuthError("The token lacks the tenant or user claim.")
    if tenant not in config.tenants:
        raise forbidden("This tenant is not enabled on the gateway.", "tenant_not_enabled")
    roles = _roles(claims.get(oidc.claims.roles))
    if not roles:
        raise forbidden("The token carries no gateway role.", "role_not_allowed")
    subject = hashlib.sha256(f"{claims.get('iss')}|{user}".encode()).hexdigest()[:16]
    return tenant, user, roles, f"sso:{subject}", None


def _roles(claim: object) -> frozenset[Role]:
    """Gateway roles named in the claim (a string or a list); none at all means `app`."""
    if claim is None or claim == []:
        return frozenset({Role.app})
    names = [claim] if isinstance(claim, str) else claim if isinstance(claim, list) else []
    return frozenset(Role(name) for name in names if isinstance(name, str) and name in Role.__members__)


def _endpoint(requested: str | None, bound: str | None, owned: list[str]) -> str | None:
    if bound is not None:
        if requested is not None and requested != bound:
            raise forbidden(f"This key is bound to endpoint '{bound}'.", "endpoint_not_allowed")
        return bound
    if requested is None:
        return None
    if requested not in owned:
        raise forbidden(f"Endpoint '{requested}' is not one of this tenant's.", "endpoint_not_allowed")
    return requested
