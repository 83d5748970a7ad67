"""The `gateway` command: start the pair, manage gateway.yaml, read the audit log.

Global options (--config, --litellm-config, --json) are accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from wrapper.config import ConfigError, Role
from wrapper.settings import Settings


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every (sub)command takes; after the subcommand they override what came before it."""
    common = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    common.add_argument("--config", type=Path, default=default,
                        help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    common.add_argument("--litellm-config", type=Path, default=default,
                        help="LiteLLM's config (default: $GATEWAY_LITELLM_CONFIG or ./litellm_config.yaml)")
    common.add_argument("--json", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="machine-readable output")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _global_options(defaults=False)
    parser = argparse.ArgumentParser(prog="gateway", description="An organisation's LLM gateway.",
                                     parents=[_global_options(defaults=True)])
    commands = parser.add_subparsers(dest="command", required=True)

    def group(name: str, help: str):
        return commands.add_parser(name, help=help, parents=[common]).add_subparsers(dest="action", required=True)

    def command(parent, name: str, help: str):
        return parent.add_parser(name, help=help, parents=[common])

    commands.add_parser("up", help="start LiteLLM and the wrapper together", parents=[common])

    tenants = group("tenants", "manage tenants")
    add = command(tenants, "add", "add a tenant")
    add.add_argument("name", help="tenant id: lower-case letters, digits, . _ -")
    add.add_argument("--display-name", default="")
    add.add_argument("--models", nargs="*", default=["*"], help="allowed model names (default: all)")
    add.add_argument("--endpoints", nargs="*", default=[], help="the tenant's app endpoints")
    command(tenants, "list", "every tenant: id, name, models, endpoints, keys")
    show = command(tenants, "show", "one tenant's settings as in force (defaults included)")
    show.add_argument("name")
    edit = command(tenants, "edit", "change a tenant's name, models or endpoints")
    edit.add_argument("name")
    edit.add_argument("--display-name")
    edit.add_argument("--models", nargs="*", help="the allowed model names, replacing the list")
    edit.add_argument("--add-endpoint", action="append", default=[], metavar="ENDPOINT")
    edit.add_argument("--remove-endpoint", action="append", default=[], metavar="ENDPOINT")
    remove = command(tenants, "remove", "remove a tenant and every key of it (refused at once)")
    remove.add_argument("name")

    keys = group("keys", "manage API keys")
    create = command(keys, "create", "create a key; prints it once, as the last line")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--endpoint")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.app.value)
    create.add_argument("--expires", help="when the key stops working: a duration (90d, 12h, 30m) or an ISO time")
    listing = command(keys, "list", "keys (never a secret): id, tenant, name, role, endpoint, dates, state")
    listing.add_argument("--tenant")
    rotate = command(keys, "rotate", "a new key like this one; the old one works for a grace period, then is refused")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", default="24h", help="how long the old key keeps working (default 24h; 0 for none)")
    revoke = command(keys, "revoke", "revoke a key at once")
    revoke.add_argument("key_id")

    config = group("config", "the gateway's configuration")
    command(config, "check", "validate gateway.yaml against LiteLLM's config; exit 1 naming each problem")
    command(config, "show", "the configuration in force, defaults included, key hashes elided")

    limits = group("limits", "rate limits, concurrency and budgets")
    shown = command(limits, "show", "the limits in force for a tenant and, on Redis, their use now")
    shown.add_argument("--tenant", required=True)

    db = group("db", "the gateway's database")
    command(db, "upgrade", "apply the schema migrations ($GATEWAY_DATABASE_URL)")

    audit = group("audit", "the audit log")
    verify = command(audit, "verify", "exit 0 if the log is intact, 1 naming the first bad record")
    verify.add_argument("--tenant", help="one tenant (default: every tenant in the log)")
    prune = command(audit, "prune", "remove a tenant's records older than its audit.retention_days "
                    "(run with a database role that owns the audit tables)")
    prune.add_argument("--tenant", required=True)
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    export = command(audit, "export", "a verifiable NDJSON export of one tenant's log, on stdout")
    export.add_argument("--tenant", required=True)
    export.add_argument("--since", help="ISO 8601 time, inclusive (no offset means UTC)")
    export.add_argument("--until", help="ISO 8601 time, exclusive (no offset means UTC)")
    command(audit, "public-key", "the gateway's public key, to check checkpoints and export manifests with")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("config", "litellm_config") if getattr(args, name, None)}
    settings = Settings(**overrides)
    try:
        return _run(args, settings)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _run(args, settings: Settings) -> int:
    if args.command == "up":
        from wrapper.cli.up import run_pair

        return asyncio.run(run_pair(settings))
    if args.command == "db" or (args.command == "audit" and args.action != "public-key"):
        from wrapper.audit import commands

        return commands.run(args, settings)
    if args.command == "limits":
        from wrapper.cli import limits

        return limits.run(args, settings)
    from wrapper.cli import manage

    return manage.run(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
