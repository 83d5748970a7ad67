"""Changes to gateway.yaml made by the `gateway` CLI.

Each change is validated as a whole config before it is written, written to a
temporary file and renamed over the old one (the running gateway never reads
half a file, and picks the change up on its next request), under a lock on the
file's folder so two CLI calls cannot lose each other's change (no lock file is
left behind). The file is edited as a document (ruamel.yaml): its comments,
order and quoting stay, and so does its mode.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ruamel.yaml import YAML

from wrapper.auth.keys import new_key
from wrapper.config import ConfigError, Role, Tenant, validate_config

_yaml = YAML()  # round trip: comments, order and quoting survive an edit
_yaml.indent(mapping=2, sequence=4, offset=2)
_yaml.width = 4096
_yaml.preserve_quotes = True
# The gateway reads the file as YAML 1.1 (PyYAML), where a bare `off`, `yes` or `null` is not a string: a new
# string that looks like one of those is written quoted.
_YAML11_NOT_STRINGS = re.compile(r"^(?:y|n|yes|no|on|off|true|false|null|~|)$", re.IGNORECASE)


def _string(representer, value: str):
    style = '"' if _YAML11_NOT_STRINGS.match(value) else None
    return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_yaml.representer.add_representer(str, _string)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file's folder: the file itself is replaced by each edit, so it cannot hold one."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def read_document(path: Path):
    """gateway.yaml as an editable document (an empty mapping when the file is missing or empty)."""
    if not path.exists():
        return _yaml.load("{}")
    try:
        data = _yaml.load(path.read_text())
    except Exception as exc:  # ruamel's errors name the line and column
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return _yaml.load("{}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _edit(path: Path, change: Callable[[dict], object]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        data = read_document(path)
        result = change(data)
        validate_config(_plain(data), f"{path} (after this change, which was not written)")
        text = io.StringIO()
        _yaml.dump(data, text)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600  # key hashes: owner only by default
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text.getvalue())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return result


def _plain(data):
    """The document as plain dicts and lists, for validation."""
    if isinstance(data, dict):
        return {str(key): _plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_plain(value) for value in data]
    return data


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def add_tenant(path: Path, tenant_id: str, name: str, models: list[str], endpoints: list[str]) -> None:
    def change(data: dict) -> None:
        tenants = data.setdefault("tenants", {})
        if tenants is None:
            tenants = data["tenants"] = {}
        if tenant_id in tenants:
            raise ConfigError(f"tenant {tenant_id!r} already exists")
        tenants[tenant_id] = Tenant(name=name or tenant_id, models=models, endpoints=endpoints).model_dump(
            mode="json", exclude_defaults=True)  # the defaults are the documented ones: written, they would hide them

    _edit(path, change)


def edit_tenant(path: Path, tenant_id: str, name: str | None = None, models: list[str] | None = None,
                add_endpoints: list[str] = (), remove_endpoints: list[str] = ()) -> None:
    def change(data: dict) -> None:
        tenant = _tenant(data, tenant_id)
        if name is not None:
            tenant["name"] = name
        if models is not None:
            tenant["models"] = list(models)
        endpoints = tenant.get("endpoints")
        if add_endpoints or remove_endpoints:
            if endpoints is None:
                endpoints = tenant["endpoints"] = {}
            elif isinstance(endpoints, list):  # the older form: a list of names
                endpoints = tenant["endpoints"] = {endpoint: {} for endpoint in endpoints}
        for endpoint in add_endpoints:
            if endpoint in endpoints:
                raise ConfigError(f"tenant {tenant_id!r} already has endpoint {endpoint!r}")
            endpoints[endpoint] = {}
        for endpoint in remove_endpoints:
            if endpoint not in (endpoints or {}):
                raise ConfigError(f"tenant {tenant_id!r} has no endpoint {endpoint!r}")
            bound = [key["id"] for key in data.get("keys") or [] if key.get("tenant") == tenant_id
                     and key.get("endpoint") == endpoint and not key.get("revoked_at")]
            if bound:
                raise ConfigError(f"endpoint {endpoint!r} has keys bound to it ({', '.join(bound)}): revoke them first")
            del endpoints[endpoint]

    _edit(path, change)


def remove_tenant(path: Path, tenant_id: str) -> int:
    """Remove a tenant and its keys (every one of them stops working at once); returns how many keys went."""
    def change(data: dict) -> int:
        _tenant(data, tenant_id)
        del data["tenants"][tenant_id]
        keys = data.get("keys") or []
        kept = [key for key in keys if key.get("tenant") != tenant_id]
        removed = len(keys) - len(kept)
        if removed:
            keys[:] = kept
        return removed

    return _edit(path, change)


def create_key(path: Path, tenant: str, name: str, endpoint: str | None, role: Role,
               expires_at: datetime | None = None) -> tuple[str, str]:
    """Add a key; returns (key id, the key). Only its hash is written."""
    key_id, key, key_hash = new_key()

    def change(data: dict) -> None:
        if tenant not in (data.get("tenants") or {}):
            raise ConfigError(f"unknown tenant {tenant!r}; add it with `gateway tenants add {tenant}`")
        record = {"id": key_id, "tenant": tenant, "name": name, "role": role.value, "hash": key_hash,
                  "created_at": _now()}
        if endpoint:
            record["endpoint"] = endpoint
        if expires_at is not None:
            record["expires_at"] = expires_at.isoformat(timespec="seconds")
        if data.get("keys") is None:
            data["keys"] = []
        data["keys"].append(record)

    _edit(path, change)
    return key_id, key


def rotate_key(path: Path, key_id: str, grace: timedelta) -> tuple[str, str, datetime]:
    """A new key like the old one (tenant, name, role, endpoint); the old one stops working after `grace`.

    Returns (new key id, the new key, when the old one expires)."""
    new_id, key, key_hash = new_key()
    old_expires = datetime.now(UTC).replace(microsecond=0) + grace

    def change(data: dict) -> None:
        old = _key(data, key_id)
        if old.get("revoked_at"):
            raise ConfigError(f"key {key_id} is revoked; create a new one instead")
        record = {"id": new_id, "tenant": old["tenant"], "name": old["name"], "role": old.get("role", Role.app.value),
                  "hash": key_hash, "created_at": _now(), "rotated_from": key_id}
        if old.get("endpoint"):
            record["endpoint"] = old["endpoint"]
        current = old.get("expires_at")
        if current is None or datetime.fromisoformat(str(current)) > old_expires:
            old["expires_at"] = old_expires.isoformat(timespec="seconds")
        data["keys"].append(record)

    _edit(path, change)
    return new_id, key, old_expires


def revoke_key(path: Path, key_id: str) -> None:
    def change(data: dict) -> None:
        record = _key(data, key_id)
        if not record.get("revoked_at"):
            record["revoked_at"] = _now()

    _edit(path, change)


def _tenant(data: dict, tenant_id: str) -> dict:
    tenant = (data.get("tenants") or {}).get(tenant_id)
    if tenant is None:
        raise ConfigError(f"no tenant {tenant_id!r}")
    return tenant


def _key(data: dict, key_id: str) -> dict:
    for record in data.get("keys") or []:
        if record.get("id") == key_id:
            return record
    raise ConfigError(f"no key with id {key_id!r}")
