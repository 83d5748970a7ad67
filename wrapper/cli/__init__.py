"""The `gateway` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from wrapper.config import ConfigError, Role
from wrapper.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="An organisation's LLM gateway.")
    parser.add_argument("--config", type=Path, help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start LiteLLM and the wrapper together")
    up.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="gateway.yaml")
    up.add_argument("--litellm-config", type=Path, help="LiteLLM config (default: $GATEWAY_LITELLM_CONFIG or ./litellm_config.yaml)")

    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(dest="action", required=True)
    add = tenants.add_parser("add", help="add a tenant")
    add.add_argument("name", help="tenant id: lower-case letters, digits, . _ -")
    add.add_argument("--display-name", default="")
    add.add_argument("--models", nargs="*", default=["*"], help="allowed model names (default: all)")
    add.add_argument("--endpoints", nargs="*", default=[], help="the tenant's app endpoints")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key; prints it once, as the last line")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--endpoint")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.app.value)
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")

    db = commands.add_parser("db", help="the gateway's database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply the schema migrations ($GATEWAY_DATABASE_URL)")

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    verify = audit.add_parser("verify", help="exit 0 if the log is intact, 1 naming the first bad record")
    verify.add_argument("--tenant", help="one tenant (default: every tenant in the log)")
    prune = audit.add_parser("prune", help="remove a tenant's records older than its audit.retention_days "
                             "(run with a database role that owns the audit tables)")
    prune.add_argument("--tenant", required=True)
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    export = audit.add_parser("export", help="a verifiable NDJSON export of one tenant's log, on stdout")
    export.add_argument("--tenant", required=True)
    export.add_argument("--since", help="ISO 8601 time, inclusive (no offset means UTC)")
    export.add_argument("--until", help="ISO 8601 time, exclusive (no offset means UTC)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {"config": args.config} if args.config else {}
    if getattr(args, "litellm_config", None):
        overrides["litellm_config"] = args.litellm_config
    settings = Settings(**overrides)
    try:
        return _run(args, settings)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _run(args, settings: Settings) -> int:
    from wrapper.config import edit as config_edit

    if args.command == "up":
        from wrapper.cli.up import run_pair

        return asyncio.run(run_pair(settings))
    if args.command in ("db", "audit"):
        from wrapper.audit import commands

        return commands.run(args, settings)
    if args.command == "tenants":
        config_edit.add_tenant(settings.config, args.name, args.display_name, args.models, args.endpoints)
        print(f"added tenant {args.name} to {settings.config}")
        return 0
    if args.action == "create":
        key_id, key = config_edit.create_key(settings.config, args.tenant, args.name, args.endpoint, Role(args.role))
        print(f"created key {key_id} for tenant {args.tenant} (role {args.role}); it is shown once, store it now:")
        print(key)
        return 0
    config_edit.revoke_key(settings.config, args.key_id)
    print(f"revoked key {args.key_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
