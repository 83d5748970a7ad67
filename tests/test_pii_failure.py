"""A PII detector that fails: the request fails (503) and nothing reaches the provider, unless the tenant chose open.

The wrapper runs as its own process in front of the fake provider, with the
detector broken inside that process (the only way to break a library that works).
"""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import orjson
import yaml

from tests.identity import gateway_cli
from tests.processes import BIN, free_port, start, stop, wait_until, write_litellm_config

BROKEN_DETECTOR = """
import sys, uvicorn
from wrapper.pii.scanner import PiiScanner

def broken(self, *args, **kwargs):
    raise RuntimeError("the detector is down")

PiiScanner.find = broken
uvicorn.run("wrapper.app:create_app", factory=True, port=int(sys.argv[1]), log_level="warning")
"""


def test_a_failed_detection_refuses_the_request_unless_the_tenant_chose_open(tmp_path, fake_provider):
    config = tmp_path / "gateway.yaml"
    keys = {}
    for tenant, on_failure in (("closed", "closed"), ("open", "open")):
        gateway_cli(config, "tenants", "add", tenant, "--models", "fake-chat")
        keys[tenant] = gateway_cli(config, "keys", "create", "--tenant", tenant, "--name", "k")
        data = yaml.safe_load(config.read_text())
        data["tenants"][tenant]["pii"] = {"mode": "redact", "on_failure": on_failure}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
    port = free_port()
    models = write_litellm_config(tmp_path / "litellm_config.yaml", fake_provider.url, {"fake-chat": {}})
    env = {"GATEWAY_LITELLM_PORT": fake_provider.url.rsplit(":", 1)[1], "GATEWAY_INTERNAL_SECRET": "x",
           "GATEWAY_LITELLM_CONFIG": str(models),
           "GATEWAY_CONFIG": str(config), "GATEWAY_VAR_DIR": str(tmp_path / "var")}
    gateway_cli(config, "db", "upgrade", env=env)
    log = tmp_path / "wrapper.log"
    wrapper = start([str(BIN / "python"), "-c", BROKEN_DETECTOR, str(port)], log, env)
    try:
        wait_until(f"http://127.0.0.1:{port}/healthz", 30, wrapper, log)
        ids = {}
        for tenant in keys:
            ids[tenant] = marker = f"{tenant}-{uuid.uuid4().hex}"
            response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                                  headers={"authorization": f"Bearer {keys[tenant]}", "x-request-id": marker},
                                  json={"model": "fake-chat", "messages": [{"role": "user", "content": f"{marker} a@b.example"}]})
            if tenant == "closed":
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "pii_unavailable"
                assert fake_provider.requests_containing(marker) == []
            else:  # the tenant's documented choice: forwarded unscanned, and the record says so
                assert response.status_code == 200, response.text
                assert len(fake_provider.requests_containing(marker)) == 1
    finally:
        stop(wrapper)
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as db:
        records = {row[0]: orjson.loads(row[1]) for row in db.execute("SELECT request_id, record FROM audit_events")}
    assert records[ids["closed"]]["status"] == 503 and records[ids["closed"]]["error_code"] == "pii_unavailable"
    assert records[ids["open"]]["pii"] == {"mode": "redact", "unscanned": True}
    assert "the detector is down" not in log.read_text()  # the log names the failure's type only
