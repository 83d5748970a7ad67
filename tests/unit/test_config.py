"""gateway.yaml validation and the log format (unit level)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from wrapper.config import ConfigError, ConfigStore, load_config
from wrapper.observability.log_context import request_id_var, tenant_var
from wrapper.observability.logs import JsonFormatter


@pytest.mark.parametrize(
    "text, where",
    [
        ("tenants: [unclosed\n", "not valid YAML"),
        ("- a list\n", "top level must be a mapping"),
        ("tenants:\n  acme: {models: 42}\n", "tenants.acme.models"),
        ("tenants:\n  Bad_Name!: {}\n", "tenant id 'Bad_Name!'"),
        ("tenants: {}\nkeys:\n  - {id: 0123456789ab, tenant: ghost, name: k, hash: 'sha256:" + "0" * 64 + "'}\n", "unknown tenant 'ghost'"),
        ("tenants:\n  a: {}\nkeys:\n  - {id: 0123456789ab, tenant: a, name: k, hash: plain-text-key}\n", "keys.0.hash"),
        ("oidc: {issuer: i, audience: a, jwks_url: u, algorithms: [HS256]}\n", "only asymmetric algorithms"),
        ("surprise: 1\n", "surprise"),
    ],
)
def test_config_errors_name_the_file_and_the_field(tmp_path, text, where):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value) and where in str(error.value)


def test_store_keeps_the_config_in_force_when_the_new_file_is_invalid(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("tenants:\n  acme: {models: ['*']}\n")
    store = ConfigStore(path)
    path.write_text("tenants:\n  acme: {models: 42}\n")
    assert "acme" in store.current().tenants
    path.write_text("tenants:\n  acme: {}\n  globex: {}\n")
    assert set(store.current().tenants) == {"acme", "globex"}


def test_log_lines_are_json_with_request_id_and_tenant():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    request_id_var.set("req-1")
    tenant_var.set("acme")
    try:
        logger.warning("something happened")
    finally:
        request_id_var.set(None)
        tenant_var.set(None)
    entry = json.loads(stream.getvalue())
    assert entry["request_id"] == "req-1" and entry["tenant"] == "acme" and entry["message"] == "something happened"
