"""`gateway db upgrade`, `gateway audit verify`, `gateway audit export` and `gateway audit prune`."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.exc import DBAPIError

from wrapper.audit.export import check_window, export_lines
from wrapper.audit.migrate import upgrade_database_sync
from wrapper.audit.query import parse_time
from wrapper.audit.retention import RetentionRefused, cut_expired, refuse_by_policy
from wrapper.audit.signing import gateway_signer
from wrapper.audit.store import AuditStore, make_engine
from wrapper.config import load_config
from wrapper.settings import Settings


def run(args, settings: Settings) -> int:
    if settings.database_url.startswith("sqlite"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "db":
        upgrade_database_sync(settings.database_url)
        print("the database schema is up to date")
        return 0
    if args.action == "prune":
        return asyncio.run(_prune(settings, args.tenant, args.dry_run))
    if args.action == "export":
        return _export(settings, args.tenant, args.since, args.until)
    return asyncio.run(_verify(settings, args.tenant))


async def _verify(settings: Settings, tenant: str | None) -> int:
    signer = gateway_signer(settings)
    store = AuditStore(make_engine(settings.database_url))
    try:
        tenants = [tenant] if tenant else await store.tenants()
        intact = True
        for name in tenants:
            verdict = await store.verify(name, {signer.key_id: signer.public_key})
            if verdict.ok:
                print(f"{name}: intact, {verdict.checked} records")
            else:
                intact = False
                print(f"{name}: NOT intact: first bad record is seq {verdict.first_bad_seq}: {verdict.reason}")
        return 0 if intact else 1
    finally:
        await store.engine.dispose()


async def _prune(settings: Settings, tenant: str, dry_run: bool) -> int:
    """Cut the tenant's expired records per gateway.yaml; exit 1 when its policy or its chain forbids it."""
    tenants = load_config(settings.config).tenants
    if tenant not in tenants:
        print(f"gateway: unknown tenant {tenant} (not in {settings.config})", file=sys.stderr)
        return 1
    signer = gateway_signer(settings)
    store = AuditStore(make_engine(settings.database_url))
    try:
        refuse_by_policy(tenant, tenants[tenant].audit)
        # A cut of a damaged chain would remove the evidence and then vouch for what is left.
        verdict = await store.verify(tenant, {signer.key_id: signer.public_key})
        if not verdict.ok:
            print(f"gateway: refusing to cut {tenant}: the log is NOT intact: first bad record is seq "
                  f"{verdict.first_bad_seq}: {verdict.reason}", file=sys.stderr)
            return 1
        cut = await cut_expired(store, tenant, tenants[tenant].audit, dry_run=dry_run)
    except RetentionRefused as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        print(f"gateway: the retention cut failed and removed nothing: {exc.orig} "
              "(it needs a database role that owns audit_events)", file=sys.stderr)
        return 1
    finally:
        await store.engine.dispose()
    older = f"older than {cut.cutoff.isoformat()} ({tenants[tenant].audit.retention_days} days)"
    if not cut.removed:
        print(f"{tenant}: nothing to remove: the first record is not {older}")
    elif cut.dry_run:
        print(f"{tenant}: would remove {cut.removed} records through seq {cut.through_seq}, {older}")
    else:
        print(f"{tenant}: removed {cut.removed} records through seq {cut.through_seq}, {older}; "
              "a retention_cut record closes the gap")
    return 0


def _export(settings: Settings, tenant: str, since: str | None, until: str | None) -> int:
    """NDJSON on stdout; exit 2 on a bad --since/--until."""
    try:
        window = check_window(parse_time(since, "--since") if since else None,
                              parse_time(until, "--until") if until else None)
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2

    async def write() -> int:
        signer = gateway_signer(settings)
        engine = AuditStore(make_engine(settings.database_url)).engine
        try:
            async for line in export_lines(engine, tenant, *window, signer):
                sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            return 0
        finally:
            await engine.dispose()

    return asyncio.run(write())
