"""A lean HTTP/1.1 load generator for the benches: keep-alive connections, one prepared request, little CPU.

At a few thousand requests per second a Python HTTP client (aiohttp: ~150 µs of CPU per request here)
takes a core of the two this machine has from the servers it measures. This one writes the same
prepared bytes on each connection and reads only the status line, the headers it needs and the body
(Content-Length or chunked), on uvloop: its own CPU per request is reported beside the servers'.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field

import uvloop


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def call(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        else:  # chunked
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(part[:-2] for part in parts)
        return int(status_line.split(b" ", 2)[1]), headers, body

    def close(self) -> None:
        self.writer.close()


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    header_samples: list[dict[bytes, bytes]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)]

    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


async def _closed_loop(host, port, request, concurrency, seconds=None, total=None, keep_headers=0) -> Run:
    run = Run()
    connections = [await Connection.open(host, port) for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds if seconds else None
    remaining = [total] if total else None

    async def worker(connection: Connection) -> None:
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if remaining is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            status, headers, _ = await connection.call(request)
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
            run.statuses[status] = run.statuses.get(status, 0) + 1
            if len(run.header_samples) < keep_headers:
                run.header_samples.append(headers)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    run.seconds, run.client_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    for connection in connections:
        connection.close()
    return run


async def _open_loop(host, port, request, rate, seconds, connections=64) -> Run:
    """Requests started at a fixed rate, whatever the answers' latency (up to `connections` in flight)."""
    run = Run()
    idle = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(host, port))
    pending = set()

    async def one(connection: Connection) -> None:
        started = time.perf_counter()
        status, _, _ = await connection.call(request)
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
        run.statuses[status] = run.statuses.get(status, 0) + 1
        idle.put_nowait(connection)

    cpu, started = time.process_time(), time.perf_counter()
    interval, count = 1.0 / rate, int(rate * seconds)
    for index in range(count):
        delay = started + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(await idle.get()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    run.seconds, run.client_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    while not idle.empty():
        idle.get_nowait().close()
    return run


def closed_loop(host: str, port: int, request: bytes, concurrency: int, seconds: float | None = None,
                total: int | None = None, keep_headers: int = 0) -> Run:
    """`concurrency` connections, each sending its next request as soon as the last is answered."""
    return uvloop.run(_closed_loop(host, port, request, concurrency, seconds, total, keep_headers))


def open_loop(host: str, port: int, request: bytes, rate: float, seconds: float) -> Run:
    return uvloop.run(_open_loop(host, port, request, rate, seconds))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (its threads included), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # ended since
    return total


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (LiteLLM's workers are its children's children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    queue += [int(child) for child in children.read().split()]
        except OSError:
            pass
    return found
