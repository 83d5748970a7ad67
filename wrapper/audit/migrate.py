"""Apply the audit log's migrations (Alembic) to a database URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config


def upgrade_database_sync(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


async def upgrade_database(url: str) -> None:
    # Alembic's env runs its own event loop, so it goes to a thread when called from async code.
    await asyncio.to_thread(upgrade_database_sync, url)
