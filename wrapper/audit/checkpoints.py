"""Sign every chain's head now and then, and once more at shutdown.

A signed checkpoint pins history up to its seq: after it, even a consistent
rewrite by a database superuser no longer verifies. Replicas may sign the same
head at the same moment; the store keeps one checkpoint per (tenant, seq).
"""

from __future__ import annotations

import asyncio
import logging

from wrapper.audit.signing import Signer
from wrapper.audit.store import AuditStore

logger = logging.getLogger("wrapper.audit")


async def checkpoint_all(store: AuditStore, signer: Signer) -> int:
    """Sign each tenant's head that moved since its last checkpoint; returns how many were signed."""
    signed = 0
    try:
        for tenant in await store.tenants():
            if await store.checkpoint(tenant, signer) is not None:
                signed += 1
    except Exception as exc:  # the store being down must not stop the wrapper; the next round catches up
        logger.error("audit checkpoint failed: %s: %s", type(exc).__name__, exc)
    return signed


async def checkpoint_periodically(store: AuditStore, signer: Signer, every_seconds: float) -> None:
    while True:
        await asyncio.sleep(every_seconds)
        await checkpoint_all(store, signer)
