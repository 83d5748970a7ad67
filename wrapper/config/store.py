"""Loading gateway.yaml, and the config in force.

`ConfigStore` serves the current config and reloads it when the file changes
(checked with one stat per request, so a revocation takes effect on the next
request). A file that fails validation is rejected and logged, and the config
in force stays.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from wrapper.config.models import GatewayConfig

logger = logging.getLogger("wrapper.config")


class ConfigError(Exception):
    pass


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway.yaml; a missing file is an empty config (no tenants, nobody gets in)."""
    if not path.exists():
        return GatewayConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return validate_config(data, str(path))


def validate_config(data: dict, source: str) -> GatewayConfig:
    """Validate a parsed config; the error names the source and each bad field."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


class ConfigStore:
    """The config in force, reloaded when the file's stat changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.config = load_config(path)  # at start an invalid file is fatal, with the same clear message

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> GatewayConfig:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._reload()
        return self.config

    def _reload(self) -> None:
        try:
            self.config = load_config(self.path)
        except ConfigError as exc:
            logger.error("rejected the new gateway config, keeping the one in force: %s", exc)
            return
        logger.info("reloaded the gateway config: %d tenants, %d keys", len(self.config.tenants), len(self.config.keys))
