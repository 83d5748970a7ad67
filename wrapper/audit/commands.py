"""`gateway db upgrade` and `gateway audit verify`."""

from __future__ import annotations

import asyncio

from wrapper.audit.migrate import upgrade_database_sync
from wrapper.audit.signing import Signer
from wrapper.audit.store import AuditStore, make_engine
from wrapper.settings import Settings


def run(args, settings: Settings) -> int:
    if settings.database_url.startswith("sqlite"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "db":
        upgrade_database_sync(settings.database_url)
        print("the database schema is up to date")
        return 0
    return asyncio.run(_verify(settings, args.tenant))


async def _verify(settings: Settings, tenant: str | None) -> int:
    signer = Signer.load_or_create(settings.audit_signing_key, settings.var_dir / "audit-signing.key")
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
