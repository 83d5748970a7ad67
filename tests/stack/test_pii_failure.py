"""A PII detector that fails: the request fails (503) and nothing reaches the provider, unless the tenant chose open.

The wrapper runs as its own process in front of the fake provider, with the
detector broken inside that process (the only way to break a library that works).
"""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import orjson

from tests.support.processes import BIN, write_litellm_config
from tests.support.wrapper import start_wrapper, write_tenants

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
    keys = write_tenants(config, {tenant: {"models": ["fake-chat"], "pii": {"mode": "enforce", "action": "redact",
                                                                            "on_failure": tenant}}
                                  for tenant in ("closed", "open")})
    models = write_litellm_config(tmp_path / "litellm_config.yaml", fake_provider.url, {"fake-chat": {}})
    env = {"GATEWAY_LITELLM_PORT": fake_provider.url.rsplit(":", 1)[1], "GATEWAY_LITELLM_CONFIG": str(models),
           "GATEWAY_CONFIG": str(config)}
    wrapper = start_wrapper(tmp_path, env, command=lambda port: [str(BIN / "python"), "-c", BROKEN_DETECTOR, str(port)])
    log = wrapper.log
    try:
        ids = {}
        for tenant in keys:
            ids[tenant] = marker = f"{tenant}-{uuid.uuid4().hex}"
            response = httpx.post(f"{wrapper.url}/v1/chat/completions", timeout=30,
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
        wrapper.stop()
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as db:
        records = {row[0]: orjson.loads(row[1]) for row in db.execute("SELECT request_id, record FROM audit_events")}
    assert records[ids["closed"]]["status"] == 503 and records[ids["closed"]]["error_code"] == "pii_unavailable"
    assert records[ids["open"]]["pii"] == {"action": "redact", "unscanned": True}
    assert "the detector is down" not in log.read_text()  # the log names the failure's type only
