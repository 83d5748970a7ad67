"""A thread that ends the process when its event loop stops turning.

A wedged loop (a blocking call, a CPU-bound bug, a deadlock in a C extension)
answers nothing, not even /healthz: Kubernetes' liveness probe notices, but a VM or
docker-compose (whose healthcheck restarts nothing) would keep the dead process for
ever. The loop touches a heartbeat every second; when it has not for
`GATEWAY_WATCHDOG_SECONDS`, the thread logs where the loop is stuck (every thread's
stack, to stderr) and exits the process with code 70, so `gateway up` (or the
orchestrator) starts it again. Records already committed are safe; a request in
flight gets its connection closed, as with any crash.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("wrapper.watchdog")

EXIT_CODE = 70  # EX_SOFTWARE
BEAT_SECONDS = 1.0


def _exit_wedged(stalled: float) -> None:
    logger.critical("the event loop has not turned for %.1f s: exiting so the process is restarted", stalled)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(EXIT_CODE)


class Watchdog:
    def __init__(self, limit_seconds: float, on_wedged: Callable[[float], None] = _exit_wedged) -> None:
        self.limit = limit_seconds
        self.on_wedged = on_wedged
        self.heartbeat = time.monotonic()
        self._beating: asyncio.Task | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def start(self) -> None:
        self.heartbeat = time.monotonic()
        self._beating = asyncio.get_running_loop().create_task(self._beat())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.cancel()

    @property
    def stalled(self) -> float:
        """Seconds since the loop last turned (about a second when all is well)."""
        return time.monotonic() - self.heartbeat

    async def _beat(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            await asyncio.sleep(BEAT_SECONDS)

    def _watch(self) -> None:
        while not self._stop.wait(min(BEAT_SECONDS, self.limit / 4)):
            stalled = self.stalled
            if stalled > self.limit + BEAT_SECONDS:
                self.on_wedged(stalled)
                return
