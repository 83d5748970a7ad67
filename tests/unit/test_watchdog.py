"""The watchdog ends a process whose event loop stopped turning, saying where it was stuck, and leaves a busy but
turning loop alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from tests.support.processes import ROOT
from wrapper.observability.watchdog import EXIT_CODE, Watchdog


async def test_a_loop_that_keeps_turning_is_left_alone_and_a_blocked_one_is_reported():
    reports: list[float] = []
    watchdog = Watchdog(0.5, on_wedged=reports.append)
    watchdog.start()
    try:
        for _ in range(20):  # 2 s of short blocking calls: slow, but turning
            time.sleep(0.05)
            await asyncio.sleep(0.05)
        assert reports == []
        time.sleep(2.0)  # blocked for four times the limit
        assert len(reports) == 1 and reports[0] > 0.5
    finally:
        watchdog.stop()


def test_a_wedged_process_exits_70_with_the_stuck_stack_on_stderr():
    script = textwrap.dedent("""
        import asyncio, time
        from wrapper.observability.watchdog import Watchdog

        def stuck_in_a_blocking_call():
            time.sleep(30)

        async def main():
            Watchdog(0.5).start()
            await asyncio.sleep(0.1)
            stuck_in_a_blocking_call()

        asyncio.run(main())
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert done.returncode == EXIT_CODE
    assert time.monotonic() - started < 10
    assert "stuck_in_a_blocking_call" in done.stderr and "has not turned" in done.stderr
