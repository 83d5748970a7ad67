"""Start and stop the processes the integration tests talk to (all on loopback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered:\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )


def stop(process: subprocess.Popen, timeout: float = 15) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def start_fake_provider(log: Path, behaviours: dict[str, dict]) -> tuple[subprocess.Popen, str]:
    """The fake provider (tests/support/fake_provider.py) as a process of its own, ready: (process, its URL)."""
    port = free_port()
    process = start([str(BIN / "python"), "-m", "tests.support.fake_provider", "--port", str(port),
                     "--behaviours", json.dumps(behaviours)], log)
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{url}/_fake/log", 20, process, log)
    return process, url


def write_litellm_config(path: Path, fake_url: str, models: dict[str, dict],
                         extra_callbacks: tuple[str, ...] = (), fallbacks: dict[str, list[str]] | None = None) -> Path:
    """A LiteLLM config whose models are answered by the fake provider, guarded like production."""
    lines = ["model_list:"]
    for name, extra in models.items():
        provider = extra.get("provider", "openai")  # cohere for rerank: LiteLLM adds /v1/rerank to its base itself
        params = {"model": f"{provider}/{name}", "api_base": f"{fake_url}/v1" if provider == "openai" else fake_url,
                  "api_key": "fake-provider-key", **{k: v for k, v in extra.items() if k not in ("provider", "tier")}}
        lines.append(f"  - model_name: {name}")
        lines.append(f"    litellm_params: {_flow(params)}")
        if "tier" in extra:  # model: auto's tiers (wrapper/routing/tiers.py)
            lines.append(f"    model_info: {_flow({'gateway_tier': extra['tier']})}")
    lines += [
        "litellm_settings:",
        "  callbacks: " + json.dumps(["custom_callbacks.wrapper_only_guard", *extra_callbacks]).replace(",", ", "),
        "  include_cost_in_streaming_usage: true",
        "router_settings:",
        "  num_retries: 0",
        "  allowed_fails_policy: {NotFoundErrorAllowedFails: 1000000}",  # as the shipped configs (config check)
        *([f"  fallbacks: {json.dumps([{group: to} for group, to in fallbacks.items()])}"] if fallbacks else []),
        "general_settings:",
        "  master_key: os.environ/LITELLM_MASTER_KEY",
        "  custom_auth: custom_callbacks.master_key_auth.user_api_key_auth",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _flow(params: dict) -> str:
    return "{" + ", ".join(f'{k}: "{v}"' if isinstance(v, str) else f"{k}: {v}" for k, v in params.items()) + "}"
