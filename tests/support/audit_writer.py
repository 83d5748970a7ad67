"""A separate writer process for the concurrency test: N tasks appending M records each."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from wrapper.audit.store import AuditStore, make_engine


async def main(url: str, tenant: str, tasks: int, each: int, label: str) -> None:
    store = AuditStore(make_engine(url))

    async def writer(task: int) -> None:
        for i in range(each):
            now = datetime.now(UTC)
            await store.append([{"tenant": tenant, "request_id": f"{label}-{task}-{i}", "occurred_at": now, "status": 200}])

    await asyncio.gather(*(writer(t) for t in range(tasks)))
    await store.close()


if __name__ == "__main__":
    url, tenant, tasks, each, label = sys.argv[1:]
    asyncio.run(main(url, tenant, int(tasks), int(each), label))
