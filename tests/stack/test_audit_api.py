"""The audit API through the real stack: roles, tenant isolation, paging, verify and export."""

from __future__ import annotations

import base64
import itertools
import uuid

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.support.audit_db import records_of
from tests.support.http import chat, get
from wrapper.audit.export import verify_export

ROUTES = ("/v1/audit/events", "/v1/audit/events/some-id", "/v1/audit/verify", "/v1/audit/export")


def answered(stack, key: str, model: str = "fake-chat", **headers) -> str:
    """The request id of an answered chat."""
    rid = f"api-{uuid.uuid4().hex[:12]}"
    response = chat(stack, key, model=model, **{"x-request-id": rid}, **headers)
    assert response.status_code == 200, response.text
    return rid


@pytest.fixture(scope="module")
def traffic(stack) -> dict[str, str]:
    """Requests of both tenants, with values that exist only in globex (model, endpoint) to tempt a leak."""
    return {
        "acme": answered(stack, "acme-app", **{"x-gateway-endpoint": "support"}),
        "globex": answered(stack, "globex-app", "globex-private", **{"x-gateway-endpoint": "research"}),
        "globex-shared-model": answered(stack, "globex-app"),
    }


@pytest.mark.parametrize("path", ROUTES)
def test_an_app_key_cannot_read_the_audit_api(stack, path):
    response = get(stack, "acme-app", path)
    assert response.status_code == 403 and response.json()["error"]["code"] == "role_not_allowed"


@pytest.mark.parametrize("path", [p for p in ROUTES if "some-id" not in p])
def test_an_auditor_gets_403_for_another_tenant(stack, path):
    response = get(stack, "acme-auditor", path, tenant="globex")
    assert response.status_code == 403 and response.json()["error"]["code"] == "tenant_not_allowed"


def all_pages(stack, key: str, **params) -> list[dict]:
    events, cursor = [], None
    while True:
        page = get(stack, key, "/v1/audit/events", **params, **({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        events += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return events


def test_an_auditor_never_sees_another_tenants_row_in_any_filter_combination(stack, traffic):
    globex = records_of(stack.database_url, traffic["globex"])[0]
    filters = {
        "request_id": [traffic["globex"], traffic["globex-shared-model"], traffic["acme"]],
        "model": ["globex-private", "fake-chat"],
        "endpoint": ["research", "support"],
        "status": ["200"],
        "since": [globex["occurred_at"]],
        "tenant": ["acme"],
    }
    seen_acme = 0
    for size in range(0, 3):
        for names in itertools.combinations(filters, size):
            for values in itertools.product(*(filters[n] for n in names)):
                params = dict(zip(names, values)) | {"limit": "200"}
                events = all_pages(stack, "acme-auditor", **params)
                assert {e["tenant"] for e in events} <= {"acme"}, params
                seen_acme += len(events)
    assert seen_acme > 0  # the control: the auditor does see its own tenant's rows
    for rid in (traffic["globex"], traffic["globex-shared-model"]):
        assert get(stack, "acme-auditor", f"/v1/audit/events/{rid}").status_code == 404
    assert get(stack, "globex-auditor", f"/v1/audit/events/{traffic['globex']}").json()["data"][0]["tenant"] == "globex"


def test_an_admin_reads_every_tenant_and_can_narrow_to_one(stack, traffic):
    both = all_pages(stack, "admin", limit="1000")
    assert {"acme", "globex"} <= {e["tenant"] for e in both}
    assert [(e["tenant"], e["seq"]) for e in both] == sorted((e["tenant"], e["seq"]) for e in both)  # stable order
    assert {e["tenant"] for e in all_pages(stack, "admin", tenant="globex")} == {"globex"}
    record = get(stack, "admin", f"/v1/audit/events/{traffic['acme']}").json()["data"][0]["record"]
    assert record["endpoint"] == "support" and record["status"] == 200


def test_paging_returns_each_row_once_in_order(stack, traffic):
    everything = [e["seq"] for e in all_pages(stack, "acme-auditor", limit="1000")]
    paged = [e["seq"] for e in all_pages(stack, "acme-auditor", limit="3")]
    assert everything == sorted(set(everything))
    # Each page read is itself recorded in acme's chain, so the paged walk sees rows added while it ran:
    # every row exactly once, in order, and nothing before them missed.
    assert paged[:len(everything)] == everything and paged == sorted(set(paged))


@pytest.mark.parametrize("params, param", [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"since": "yesterday"}, "since"), ({"status": "ok"}, "status"),
])
def test_bad_query_parameters_get_a_400_naming_them(stack, params, param):
    response = get(stack, "acme-auditor", "/v1/audit/events", **params)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_verify_reports_each_readable_chain(stack, traffic):
    mine = get(stack, "acme-auditor", "/v1/audit/verify").json()
    assert mine["ok"] is True and [t["tenant"] for t in mine["tenants"]] == ["acme"] and mine["tenants"][0]["checked"] > 0
    every = get(stack, "admin", "/v1/audit/verify").json()
    assert every["ok"] is True and {"acme", "globex"} <= {t["tenant"] for t in every["tenants"]}


def test_export_streams_a_verifiable_ndjson_of_the_auditors_tenant(stack, traffic):
    response = get(stack, "acme-auditor", "/v1/audit/export")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.content.splitlines(keepends=True)
    manifest = httpx.Response(200, content=lines[-1]).json()["manifest"]
    assert manifest["tenant"] == "acme" and manifest["count"] == len(lines) - 1 - _checkpoints(lines)
    # Checked with the gateway's own key, obtained separately: the key a manifest names proves nothing by itself.
    key = stack.signing_key()
    ok, why = verify_export(lines, key)
    assert ok, why
    assert Ed25519PublicKey.from_public_bytes(base64.b64decode(manifest["public_key"])) == key
    exported = [orjson.loads(orjson.loads(line)["record"]) for line in lines if line.startswith(b'{"prev_hash"')]
    assert {r["tenant"] for r in exported} == {"acme"} and traffic["acme"] in {r["request_id"] for r in exported}
    assert get(stack, "admin", "/v1/audit/export").status_code == 400  # an admin names the tenant


def _checkpoints(lines: list[bytes]) -> int:
    return sum(1 for line in lines if line.startswith(b'{"checkpoint"'))


def test_reading_the_audit_log_is_itself_recorded(stack):
    rid = f"read-{uuid.uuid4().hex[:12]}"
    httpx.get(f"{stack.url}/v1/audit/events", headers={**stack.auth_for("acme-auditor"), "x-request-id": rid})
    [record] = records_of(stack.database_url, rid)
    assert record["tenant"] == "acme" and record["path"] == "/v1/audit/events" and record["status"] == 200
