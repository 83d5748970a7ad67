"""A wrapper process of a test's own: its own gateway.yaml, audit store and port, in front of LiteLLM or the fake."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.identity import gateway_cli
from tests.support.processes import BIN, free_port, start, stop, wait_until


def write_tenants(config: Path, tenants: dict[str, dict]) -> dict[str, str]:
    """gateway.yaml with these tenants (name -> settings) and an app key each; the keys, by tenant."""
    from wrapper.config import Role, edit

    config.write_text(yaml.safe_dump({"tenants": tenants}, sort_keys=False))
    return {tenant: edit.create_key(config, tenant, "app", None, Role.app)[1] for tenant in tenants}


@dataclass
class LoneWrapper:
    url: str
    process: object
    log: Path

    def stop(self) -> int:
        return stop(self.process)


def start_wrapper(tmp_path: Path, env: dict[str, str], command: Callable[[int], list[str]] | None = None,
                  ready: str = "/healthz") -> LoneWrapper:
    """Prepare its audit store as the helm chart's job would, start it (uvicorn, or `command(port)`), wait for `ready`.

    `env` names GATEWAY_CONFIG at least; the var dir, port and internal secret default to the test's own."""
    port = free_port()
    env = {"GATEWAY_PORT": str(port), "GATEWAY_VAR_DIR": str(tmp_path / "var"), "GATEWAY_INTERNAL_SECRET": "x", **env}
    gateway_cli(Path(env["GATEWAY_CONFIG"]), "db", "upgrade", env=env)
    log = tmp_path / "wrapper.log"
    argv = command(port) if command else [str(BIN / "python"), "-m", "uvicorn", "wrapper.app:create_app", "--factory",
                                          "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                                          "--log-level", "warning"]
    process = start(argv, log, env)
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{url}{ready}", 30, process, log)
    return LoneWrapper(url, process, log)
