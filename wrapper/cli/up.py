"""Run the pod pair on one machine: LiteLLM on loopback and the wrapper in front of it.

Both run as child processes; their output is shown line by line with a prefix.
SIGINT or SIGTERM stops both (exit 0), the wrapper first: it stops accepting
connections, lets the requests in flight finish (streams too) for up to
`GATEWAY_SHUTDOWN_GRACE_SECONDS`, commits their records and signs the chains'
heads; only then is LiteLLM, which those requests need, stopped. A child that dies on its own is started
again after a backoff (0.5 s, doubling to 8 s; back to 0.5 s once it has run a
minute); while LiteLLM is down the wrapper answers model calls 503
`upstream_unavailable` at once and `/readyz` is 503. A child that dies more than
`GATEWAY_RESTARTS_PER_MINUTE` times in a minute is given up on: the other is
stopped and the exit code is 1, for the orchestrator to act.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import uvicorn.config

from wrapper.audit.migrate import upgrade_database
from wrapper.cli.relay import log_line
from wrapper.config import ConfigError, load_config
from wrapper.settings import Settings

STOP_GRACE_SECONDS = 10
FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 8.0
READY_TIMEOUT_SECONDS = 120

# LiteLLM must never reach out at start (this machine and many production networks cannot).
LITELLM_OFFLINE_ENV = {
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_TELEMETRY": "False",
}
# LiteLLM's own log as JSON lines, without its feedback box (its banner is dropped by the relay: wrapper.cli.relay).
LITELLM_LOG_ENV = {"JSON_LOGS": "True", "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true"}


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment both children share; generates the per-start secrets that are unset."""
    master_key = settings.litellm_master_key or "sk-litellm-" + secrets.token_urlsafe(32)
    internal_secret = settings.internal_secret or secrets.token_urlsafe(32)
    return {
        **os.environ,
        **LITELLM_OFFLINE_ENV,
        **LITELLM_LOG_ENV,
        "LITELLM_MASTER_KEY": master_key,
        "GATEWAY_LITELLM_MASTER_KEY": master_key,
        "GATEWAY_INTERNAL_SECRET": internal_secret,
        "GATEWAY_CONFIG": str(settings.config),
        "GATEWAY_LITELLM_CONFIG": str(settings.litellm_config),
        "GATEWAY_PORT": str(settings.port),
        "GATEWAY_LITELLM_PORT": str(settings.litellm_port),
        "PYTHONUNBUFFERED": "1",
        # The semantic cache's embeddings (numpy) run one at a time on a thread of their own: BLAS threads would
        # only spin on the cores the event loops need
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
        **litellm_tuning(settings),
    }


def litellm_tuning(settings: Settings) -> dict[str, str]:
    """What makes LiteLLM cheaper per request without changing what it does (bench/results/overhead.md)."""
    return {
        "NUM_WORKERS": str(settings.litellm_workers),
        "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER": "true" if settings.litellm_fast_openai_handler else "false",
    }


def litellm_command(settings: Settings) -> list[str]:
    executable = Path(sys.executable).with_name("litellm")
    litellm = str(executable) if executable.exists() else shutil.which("litellm")
    if litellm is None:
        raise SystemExit("gateway: the `litellm` command is not installed in this environment")
    command = [litellm, "--config", str(settings.litellm_config), "--host", "127.0.0.1", "--port", str(settings.litellm_port)]
    if not settings.log_requests:
        command += ["--log_config", str(_quiet_access_log_config(settings.var_dir))]
    return command


def _quiet_access_log_config(var_dir: Path) -> Path:
    """Uvicorn's own logging setup for LiteLLM, with its access log (a line per request) raised to warnings."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "litellm-logging.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def wrapper_command(settings: Settings) -> list[str]:
    # X-Forwarded-For names the client only when a trusted proxy sent it (uvicorn would believe any local caller).
    trusted = settings.trusted_proxies.strip()
    forwarded = ["--proxy-headers", "--forwarded-allow-ips", trusted] if trusted else ["--no-proxy-headers"]
    return [
        sys.executable, "-m", "uvicorn", "wrapper.app:create_app", "--factory",
        "--host", settings.host, "--port", str(settings.port), *forwarded,
        "--loop", "uvloop", "--http", "wrapper.server:BoundedHttpTools", "--no-access-log", "--log-level", "warning",
        "--timeout-keep-alive", str(settings.keep_alive_seconds),
        "--timeout-graceful-shutdown", str(settings.shutdown_grace_seconds),
    ]


async def _relay(name: str, stream: asyncio.StreamReader, keep_all: bool) -> None:
    while line := await stream.readline():
        if (kept := log_line(name, line, keep_all)) is not None:
            sys.stdout.buffer.write(kept)
            sys.stdout.buffer.flush()


async def _start(name: str, command: list[str], env: dict[str, str],
                 keep_all: bool = False) -> tuple[asyncio.subprocess.Process, asyncio.Task]:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True
    )
    return process, asyncio.create_task(_relay(name, process.stdout, keep_all))


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _announce_when_ready(settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    print(f"[gateway] ready: {url}/v1 (OpenAI-compatible)", flush=True)
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    print(f"[gateway] not ready after {READY_TIMEOUT_SECONDS}s", flush=True)


async def _prepare_database(settings: Settings) -> bool:
    """Bring the audit store's schema up to date before anything can be answered (and audited)."""
    if settings.database_url.startswith("sqlite"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    try:
        await upgrade_database(settings.database_url)
    except Exception as exc:
        print(f"gateway: cannot prepare the audit database ({type(exc).__name__}: {exc})", file=sys.stderr)
        return False
    return True


async def run_pair(settings: Settings) -> int:
    if not settings.litellm_config.is_file():
        print(f"gateway: LiteLLM config not found: {settings.litellm_config}", file=sys.stderr)
        return 2
    try:
        load_config(settings.config)  # refuse a broken gateway.yaml before starting anything
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if not await _prepare_database(settings):
        return 2
    env = child_environment(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)

    announce = asyncio.create_task(_announce_when_ready(settings))
    wrapper_gone = asyncio.Event()  # LiteLLM is stopped only after the wrapper's requests in flight have finished
    children = {
        asyncio.create_task(_supervise("litellm", litellm_command(settings), env, settings, stop_requested,
                                       stop_after=wrapper_gone)): "litellm",
        asyncio.create_task(_supervise("wrapper", wrapper_command(settings), env, settings, stop_requested,
                                       grace=settings.shutdown_grace_seconds + STOP_GRACE_SECONDS,
                                       stopped=wrapper_gone)): "wrapper",
    }
    done, _ = await asyncio.wait(children, return_when=asyncio.FIRST_COMPLETED)
    gave_up = [children[task] for task in done if not task.cancelled() and task.exception() is not None]
    stop_requested.set()  # a stop asked for, or a child given up on: either way the other stops too
    await asyncio.gather(*children, return_exceptions=True)
    announce.cancel()
    if gave_up:
        print(f"[gateway] gave up on {gave_up[0]}; stopped", flush=True)
    return 1 if gave_up else 0


async def _wait_unless_dead(event: asyncio.Event, exited: asyncio.Task) -> None:
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()


class GaveUp(Exception):
    pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # its own session (start_new_session): its group is its pid
    except (ProcessLookupError, PermissionError):
        pass


async def _supervise(name: str, command: list[str], env: dict[str, str], settings: Settings,
                     stop_requested: asyncio.Event, grace: float = STOP_GRACE_SECONDS,
                     stop_after: asyncio.Event | None = None, stopped: asyncio.Event | None = None) -> None:
    """Run a child until a stop is asked for, starting it again when it dies; raises GaveUp once it died more
    than `restarts_per_minute` times in the last minute. Asked to stop, it waits for `stop_after` first, then
    gives the child `grace` seconds after SIGTERM; `stopped` is set once the child is gone for good."""
    try:
        await _run_child(name, command, env, settings, stop_requested, grace, stop_after)
    finally:
        if stopped is not None:
            stopped.set()


async def _run_child(name: str, command: list[str], env: dict[str, str], settings: Settings,
                     stop_requested: asyncio.Event, grace: float, stop_after: asyncio.Event | None) -> None:
    deaths: list[float] = []
    backoff = FIRST_BACKOFF_SECONDS
    while True:
        process, relay = await _start(name, command, env, settings.log_requests)
        started = time.monotonic()
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop_requested.is_set():
            if stop_after is not None:
                await _wait_unless_dead(stop_after, exited)
            await _stop(process, grace)
            await asyncio.gather(relay, return_exceptions=True)
            exited.cancel()
            return
        _kill_group(process.pid)  # what it started (workers) must not outlive it and hold its port
        await asyncio.gather(relay, return_exceptions=True)
        now = time.monotonic()
        deaths = [at for at in deaths if now - at < 60] + [now]
        if len(deaths) > settings.restarts_per_minute:
            print(f"[gateway] {name} exited (code {process.returncode}), {len(deaths)} times in a minute: "
                  "giving up", flush=True)
            raise GaveUp(name)
        if now - started >= 60:
            backoff = FIRST_BACKOFF_SECONDS  # it had been running well: a fresh start
        print(f"[gateway] {name} exited (code {process.returncode}); starting it again in {backoff:g} s", flush=True)
        try:
            await asyncio.wait_for(stop_requested.wait(), backoff)
            return  # asked to stop meanwhile
        except TimeoutError:
            pass
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
