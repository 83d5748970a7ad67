"""Changes to gateway.yaml made by the `gateway` CLI.

Each change is validated as a whole config before it is written, written to a
temporary file and renamed over the old one (the running gateway never reads
half a file), under a lock file so two CLI calls cannot lose each other's change.
Comments in gateway.yaml are not kept by these commands.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml

from wrapper.auth.keys import new_key
from wrapper.config import ConfigError, Role, Tenant, validate_config


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _edit(path: Path, change: Callable[[dict], object]):
    with _locked(path):
        data = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
        result = change(data)
        validate_config(data, f"{path} (after this change, which was not written)")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(data, out, sort_keys=False)
        os.replace(tmp, path)
        return result


def add_tenant(path: Path, tenant_id: str, name: str, models: list[str], endpoints: list[str]) -> None:
    def change(data: dict) -> None:
        tenants = data.setdefault("tenants", {})
        if tenant_id in tenants:
            raise ConfigError(f"tenant {tenant_id!r} already exists")
        tenants[tenant_id] = Tenant(name=name or tenant_id, models=models, endpoints=endpoints).model_dump(mode="json")

    _edit(path, change)


def create_key(path: Path, tenant: str, name: str, endpoint: str | None, role: Role) -> tuple[str, str]:
    """Add a key; returns (key id, the key). Only its hash is written."""
    key_id, key, key_hash = new_key()

    def change(data: dict) -> None:
        if tenant not in (data.get("tenants") or {}):
            raise ConfigError(f"unknown tenant {tenant!r}; add it with `gateway tenants add {tenant}`")
        record = {"id": key_id, "tenant": tenant, "name": name, "role": role.value, "hash": key_hash,
                  "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if endpoint:
            record["endpoint"] = endpoint
        data.setdefault("keys", []).append(record)

    _edit(path, change)
    return key_id, key


def revoke_key(path: Path, key_id: str) -> None:
    def change(data: dict) -> None:
        for record in data.get("keys") or []:
            if record.get("id") == key_id:
                if not record.get("revoked_at"):
                    record["revoked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                return
        raise ConfigError(f"no key with id {key_id!r}")

    _edit(path, change)
