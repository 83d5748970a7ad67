"""A Redis server of a test's own, to stop, restart or start with options (the machine's 6379 is shared)."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from tests.support.processes import free_port


@pytest.fixture
def redis_server(tmp_path):
    """{"url", "port", "process", "start"}: `start(*options)` starts it again (after a test stopped it)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]

    def start(*options: str):
        process = subprocess.Popen([*argv, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        password = options[options.index("--requirepass") + 1] if "--requirepass" in options else None
        for _ in range(100):
            try:
                redis.Redis(port=port, password=password).ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    server = {"process": start(), "start": start, "port": port, "url": f"redis://127.0.0.1:{port}/0"}
    yield server
    server["process"].kill()
    server["process"].wait()
