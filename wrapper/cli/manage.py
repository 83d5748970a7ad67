"""The operator's commands on gateway.yaml (tenants, keys, config) and the audit log's public key.

Every listing can be printed as JSON (--json) for scripts; nothing printed is ever a secret but the one
new key of `keys create` and `keys rotate`, shown once.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import yaml
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from wrapper.config import ConfigError, GatewayConfig, Mode, Role, load_config
from wrapper.config import edit as config_edit
from wrapper.settings import Settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def run(args, settings: Settings) -> int:
    handler = {
        ("tenants", "add"): _tenants_add, ("tenants", "list"): _tenants_list, ("tenants", "show"): _tenants_show,
        ("tenants", "edit"): _tenants_edit, ("tenants", "remove"): _tenants_remove,
        ("keys", "create"): _keys_create, ("keys", "list"): _keys_list, ("keys", "rotate"): _keys_rotate,
        ("keys", "revoke"): _keys_revoke,
        ("config", "check"): _config_check, ("config", "show"): _config_show,
        ("audit", "public-key"): _public_key,
    }[(args.command, args.action)]
    return handler(args, settings)


def duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use a number and s, m, h or d: 90d, 12h, 30m, 0s)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def moment(text: str) -> datetime:
    """A duration from now (90d) or an ISO time (no offset means UTC)."""
    if _DURATION.match(text.strip()):
        return datetime.now(UTC).replace(microsecond=0) + duration(text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a duration or an ISO time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _say(args, data, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def unknown_models(models: list[str], catalog) -> list[tuple[int, str]]:
    """(index, name) of each model the catalog does not serve (LiteLLM's model_list, aliases, wildcard routes)."""
    return [(index, model) for index, model in enumerate(models) if model != "*" and catalog.resolve(model) is None]


def _catalog(settings: Settings):
    from wrapper.routing.catalog import ModelCatalog

    return ModelCatalog.from_litellm_config(settings.litellm_config)


def _check_models(models: list[str] | None, settings: Settings) -> None:
    """Names LiteLLM does not serve are refused when its config is at hand (`config check` says the same later)."""
    if not models or not settings.litellm_config.is_file():
        return
    unknown = [model for _, model in unknown_models(models, _catalog(settings))]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(map(repr, unknown))}: not in {settings.litellm_config} "
                          "(LiteLLM's model_list, aliases and wildcard routes)")


def _tenants_add(args, settings: Settings) -> int:
    _check_models(args.models, settings)
    config_edit.add_tenant(settings.config, args.name, args.display_name, args.models, args.endpoints)
    _say(args, {"added": args.name}, f"added tenant {args.name} to {settings.config}")
    return 0


def _tenants_list(args, settings: Settings) -> int:
    config = load_config(settings.config)
    rows = []
    for tenant_id, tenant in config.tenants.items():
        live = [key for key in config.keys if key.tenant == tenant_id and key.usable(datetime.now(UTC))]
        rows.append({"id": tenant_id, "name": tenant.name, "models": tenant.models, "endpoints": list(tenant.endpoints),
                     "keys": len(live)})
    lines = [f"{'TENANT':<20} {'KEYS':>4}  {'MODELS':<30} ENDPOINTS"]
    lines += [f"{r['id']:<20} {r['keys']:>4}  {','.join(r['models']):<30} {','.join(r['endpoints']) or '-'}" for r in rows]
    _say(args, rows, "\n".join(lines))
    return 0


def _tenants_show(args, settings: Settings) -> int:
    config = load_config(settings.config)
    if args.name not in config.tenants:
        raise ConfigError(f"no tenant {args.name!r}")
    data = config.tenants[args.name].model_dump(mode="json")
    _say(args, data, json.dumps(data, indent=2))
    return 0


def _tenants_edit(args, settings: Settings) -> int:
    _check_models(args.models, settings)
    config_edit.edit_tenant(settings.config, args.name, args.display_name, args.models, args.add_endpoint,
                            args.remove_endpoint)
    _say(args, {"edited": args.name}, f"edited tenant {args.name}")
    return 0


def _tenants_remove(args, settings: Settings) -> int:
    removed = config_edit.remove_tenant(settings.config, args.name)
    _say(args, {"removed": args.name, "keys_removed": removed},
         f"removed tenant {args.name} and its {removed} key(s); they are refused from the next request on")
    return 0


def _keys_create(args, settings: Settings) -> int:
    expires = moment(args.expires) if args.expires else None
    key_id, key = config_edit.create_key(settings.config, args.tenant, args.name, args.endpoint, Role(args.role), expires)
    if args.json:
        _say(args, {"id": key_id, "tenant": args.tenant, "role": args.role, "expires_at": expires, "key": key}, "")
        return 0
    until = f", expires {expires.isoformat()}" if expires else ""
    print(f"created key {key_id} for tenant {args.tenant} (role {args.role}{until}); it is shown once, store it now:")
    print(key)
    return 0


def _keys_list(args, settings: Settings) -> int:
    config = load_config(settings.config)
    now = datetime.now(UTC)
    rows = []
    for key in config.keys:
        if args.tenant and key.tenant != args.tenant:
            continue
        state = "revoked" if key.revoked_at else "active" if key.usable(now) else "expired"
        rows.append({"id": key.id, "tenant": key.tenant, "name": key.name, "role": key.role.value,
                     "endpoint": key.endpoint, "created_at": key.created_at, "expires_at": key.expires_at,
                     "revoked_at": key.revoked_at, "rotated_from": key.rotated_from, "state": state})
    lines = [f"{'ID':<12}  {'TENANT':<16} {'NAME':<16} {'ROLE':<8} {'STATE':<8} {'ENDPOINT':<12} EXPIRES"]
    lines += [f"{r['id']:<12}  {r['tenant']:<16} {r['name']:<16} {r['role']:<8} {r['state']:<8} "
              f"{r['endpoint'] or '-':<12} {r['expires_at'].isoformat() if r['expires_at'] else '-'}" for r in rows]
    _say(args, rows, "\n".join(lines))
    return 0


def _keys_rotate(args, settings: Settings) -> int:
    new_id, key, old_expires = config_edit.rotate_key(settings.config, args.key_id, duration(args.grace))
    if args.json:
        _say(args, {"id": new_id, "rotated_from": args.key_id, "old_expires_at": old_expires, "key": key}, "")
        return 0
    print(f"created key {new_id} in place of {args.key_id}, which is refused from {old_expires.isoformat()}; "
          "the new key is shown once, store it now:")
    print(key)
    return 0


def _keys_revoke(args, settings: Settings) -> int:
    config_edit.revoke_key(settings.config, args.key_id)
    _say(args, {"revoked": args.key_id}, f"revoked key {args.key_id}")
    return 0


def config_problems(config: GatewayConfig, settings: Settings) -> list[str]:
    """What gateway.yaml asks that LiteLLM's config cannot serve, each named by its place in the file."""
    if not settings.litellm_config.is_file():
        return [f"{settings.litellm_config}: LiteLLM's config not found"]
    catalog = _catalog(settings)
    problems = [f"tenants.{tenant_id}.models[{index}]: unknown model {model!r} (not in {settings.litellm_config})"
                for tenant_id, tenant in config.tenants.items() for index, model in unknown_models(tenant.models, catalog)]
    for tenant_id, tenant in config.tenants.items():  # routing policies written out name tiers that exist
        places = [(f"tenants.{tenant_id}.routing", tenant.routing)] if "routing" in tenant.model_fields_set else []
        places += [(f"tenants.{tenant_id}.endpoints.{name}.routing", tenant.policy(name).routing)
                   for name, endpoint in tenant.endpoints.items() if endpoint.routing.get("tiers")]
        problems += [f"{where}.tiers.{tier}: no model group has model_info.gateway_tier {tier!r} "
                     f"(in {settings.litellm_config})"
                     for where, policy in places if policy.mode is not Mode.off
                     for tier in policy.tiers if tier not in catalog.tiers]
    return problems + _cooldown_problems(settings.litellm_config)


def _cooldown_problems(path) -> list[str]:
    """LiteLLM 1.108.5 cools a deployment down, for every tenant, on a provider's 404, which a tenant can cause at
    will (continuing a response it deleted): the config must allow 404s."""
    try:
        router = (yaml.safe_load(path.read_text()) or {}).get("router_settings") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []  # the catalog has said what is wrong with the file
    allowed = (router.get("allowed_fails_policy") or {}).get("NotFoundErrorAllowedFails")
    if isinstance(allowed, int) and allowed >= 1000:
        return []
    said = "unset" if allowed is None else repr(allowed)
    return [f"{path}: router_settings.allowed_fails_policy.NotFoundErrorAllowedFails is {said}: one tenant's "
            "provider 404 (continuing a deleted response) would cool the deployment down for every tenant; "
            "set it to 1000000"]


def _config_check(args, settings: Settings) -> int:
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        _say(args, {"ok": False, "problems": [str(exc)]}, f"gateway: {exc}")
        return 1
    problems = config_problems(config, settings)
    summary = f"{settings.config}: {len(config.tenants)} tenant(s), {len(config.keys)} key(s)"
    _say(args, {"ok": not problems, "problems": problems},
         "\n".join(problems) if problems else f"{summary}: OK against {settings.litellm_config}")
    return 1 if problems else 0


def _config_show(args, settings: Settings) -> int:
    data = load_config(settings.config).model_dump(mode="json")
    for key in data.get("keys", []):
        key["hash"] = "(elided)"
    print(json.dumps(data, indent=2))
    return 0


def _public_key(args, settings: Settings) -> int:
    from wrapper.audit.signing import gateway_signer

    signer = gateway_signer(settings)
    raw = signer.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    _say(args, {"key_id": signer.key_id, "ed25519_base64": base64.b64encode(raw).decode(), "pem": pem},
         f"key id {signer.key_id}\n{pem.strip()}")
    return 0
