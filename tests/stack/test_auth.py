"""Org auth: API keys and SSO tokens resolve to the right tenant; everything else is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from tests.support.http import chat
from tests.support.identity import gateway_cli, unsigned_token

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "authentication_error"


def accepted_by_litellm(stack, request_id: str) -> dict:
    """What the LiteLLM callback logged on admitting the request with this id."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in stack.log.read_text().splitlines():
            message = _message(line)  # gateway up's log is JSON lines: the callback's line is a message in one
            if "gateway_request " in message and f'"gateway_request_id": "{request_id}"' in message:
                return json.loads(message.split("gateway_request ", 1)[1])
        time.sleep(0.05)
    raise AssertionError(f"LiteLLM's callback never admitted {request_id}")


def _message(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    return entry.get("message", line) if isinstance(entry, dict) else line


# --- API keys -------------------------------------------------------------------------------

def test_each_tenants_key_is_served_and_litellm_receives_its_tenant(stack):
    for key_name, tenant in (("acme-app", "acme"), ("globex-app", "globex")):
        request_id = uuid.uuid4().hex
        response = chat(stack, stack.keys[key_name], **{"x-request-id": request_id})
        assert response.status_code == 200, response.text
        seen = accepted_by_litellm(stack, request_id)
        assert seen["gateway_tenant_id"] == tenant
        assert seen["gateway_credential_id"].startswith("key:")


@pytest.mark.parametrize(
    "credential",
    [
        None,
        "",
        "not-a-key",
        "gwk_short",
        "gwk_0123456789ab_" + "A" * 43,  # well-formed, unknown id
    ],
)
def test_missing_malformed_and_unknown_keys_get_401(stack, credential):
    assert_unauthorized(chat(stack, credential))


def test_a_known_key_id_with_the_wrong_secret_gets_401(stack):
    real = stack.keys["acme-app"]
    assert_unauthorized(chat(stack, real[:17] + ("B" if real[17] != "B" else "C") + real[18:]))


def test_new_key_works_at_once_and_revoked_key_is_refused_at_once(stack):
    created = gateway_cli(stack.config, "keys", "create", "--tenant", "acme", "--name", "short-lived")
    assert chat(stack, created).status_code == 200  # no restart: the running gateway reloaded the file
    key_id = created[4:16]
    gateway_cli(stack.config, "keys", "revoke", key_id)
    assert_unauthorized(chat(stack, created))


def test_a_tenant_cannot_use_another_tenants_model(stack):
    private = {**CHAT, "model": "globex-private"}
    response = chat(stack, stack.keys["acme-app"], private)
    assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"
    assert chat(stack, stack.keys["globex-app"], private).status_code == 200


def test_models_listing_differs_per_tenant(stack):
    def listing(key_name):
        response = httpx.get(f"{stack.url}/v1/models", headers=stack.auth_for(key_name))
        return {m["id"] for m in response.json()["data"]}

    acme, globex = listing("acme-app"), listing("globex-app")
    assert "globex-private" not in acme and "paced" in acme
    assert globex == {"fake-chat", "globex-private"}


def test_roles_and_endpoints_are_enforced(stack):
    auditor = chat(stack, stack.keys["acme-auditor"])
    assert auditor.status_code == 403 and auditor.json()["error"]["code"] == "role_not_allowed"
    bound = stack.keys["acme-support"]
    assert chat(stack, bound).status_code == 200
    assert chat(stack, bound, **{"x-gateway-endpoint": "search"}).status_code == 403
    unbound = stack.keys["acme-app"]
    assert chat(stack, unbound, **{"x-gateway-endpoint": "research"}).status_code == 403  # globex's endpoint
    request_id = uuid.uuid4().hex
    assert chat(stack, unbound, **{"x-gateway-endpoint": "search", "x-request-id": request_id}).status_code == 200
    assert accepted_by_litellm(stack, request_id)["gateway_endpoint"] == "search"


def test_a_client_cannot_smuggle_another_tenant_through_metadata(stack):
    request_id = uuid.uuid4().hex
    body = {**CHAT, "metadata": {"gateway_tenant_id": "globex", "tags": "tenant:globex"}}
    assert chat(stack, stack.keys["acme-app"], body, **{"x-request-id": request_id}).status_code == 200
    # The client's metadata travels nested under its own key: LiteLLM reads none of it as the gateway's.
    assert accepted_by_litellm(stack, request_id)["gateway_tenant_id"] == "acme"


# --- Org SSO (OIDC) -------------------------------------------------------------------------

def test_tokens_of_two_tenants_map_to_their_principal(stack):
    for tenant, user, algorithm in (("acme", "alice@acme.test", "RS256"), ("globex", "bob@globex.test", "ES256")):
        request_id = uuid.uuid4().hex
        token = stack.idp.token(tenant, user, algorithm=algorithm)
        assert chat(stack, token, **{"x-request-id": request_id}).status_code == 200
        seen = accepted_by_litellm(stack, request_id)
        assert (seen["gateway_tenant_id"], seen["gateway_user_id"]) == (tenant, user)
        assert seen["gateway_credential_id"].startswith("sso:")


def _hs256_with_public_key(stack) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = b64(json.dumps({"iss": "https://idp.example.test/", "aud": "llm-gateway", "sub": "eve", "tenant": "acme",
                             "exp": now + 300}).encode())
    signature = hmac.new(stack.idp.public_pem(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def _tampered(stack) -> str:
    header, claims, signature = stack.idp.token("acme", "mallory").split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
    payload["tenant"] = "globex"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda s: s.idp.token("acme", "u", lifetime=-120), id="expired"),
        pytest.param(lambda s: s.idp.token("acme", "u", aud="another-service"), id="wrong-audience"),
        pytest.param(lambda s: s.idp.token("acme", "u", iss="https://evil.test/"), id="wrong-issuer"),
        pytest.param(_tampered, id="tampered-signature"),
        pytest.param(lambda s: unsigned_token({"iss": "https://idp.example.test/", "aud": "llm-gateway", "sub": "u",
                                               "tenant": "acme", "exp": int(time.time()) + 300}), id="alg-none"),
        pytest.param(_hs256_with_public_key, id="hs256-signed-with-public-key"),
        pytest.param(lambda s: s.idp.token("acme", "u", kid="rotated-away"), id="unknown-kid"),
    ],
)
def test_bad_tokens_get_401(stack, make_token):
    assert_unauthorized(chat(stack, make_token(stack)))


@pytest.mark.parametrize("roles", [{"admin": True}, 42, ["owner", {"x": 1}]])
def test_a_token_with_odd_roles_gets_403_not_500(stack, roles):
    token = stack.idp.token("acme", "u", roles=roles)
    response = chat(stack, token)
    assert response.status_code == 403 and response.json()["error"]["code"] == "role_not_allowed"


def test_a_token_of_a_tenant_the_gateway_does_not_know_gets_403(stack):
    response = chat(stack, stack.idp.token("umbrella", "peter"))
    assert response.status_code == 403 and response.json()["error"]["code"] == "tenant_not_enabled"


# --- Hot reload, and what the logs may never contain -------------------------------------------

def test_a_broken_config_file_leaves_the_old_one_in_force(stack):
    good = stack.config.read_text()
    try:
        stack.config.write_text("tenants: [this is: not valid\n")
        assert chat(stack, stack.keys["acme-app"]).status_code == 200
        stack.config.write_text("tenants:\n  acme: {models: 42}\n")  # valid YAML, invalid config
        assert chat(stack, stack.keys["acme-app"]).status_code == 200
    finally:
        stack.config.write_text(good)
    assert "rejected the new gateway config" in stack.log.read_text()



def test_a_key_rotated_in_at_the_identity_provider_is_fetched_on_first_use(stack):
    stack.idp.publish_rotated_key()  # a new signing key under a new kid
    time.sleep(1.1)  # an unknown kid refetches the JWKS at most once a second in the test config
    fetches = stack.idp.fetches
    assert chat(stack, stack.idp.token("acme", "carol@acme.test", kid="rsa-2")).status_code == 200
    assert stack.idp.fetches == fetches + 1
    assert chat(stack, stack.idp.token("acme", "carol@acme.test", kid="rsa-2")).status_code == 200
    assert stack.idp.fetches == fetches + 1  # cached from then on


def test_sso_user_reaches_litellm_as_user(stack):
    # LiteLLM passes `user` on to providers that take it (OpenAI's own models), not to every provider.
    request_id = uuid.uuid4().hex
    token = stack.idp.token("acme", "dave@acme.test")
    assert chat(stack, token, **{"x-request-id": request_id}).status_code == 200
    assert accepted_by_litellm(stack, request_id)["user"] == "dave@acme.test"


def test_no_key_or_token_appears_in_any_log_line(stack):
    """Credentials of every kind, good and bad, sent here and now (no reliance on what other tests sent)."""
    real = stack.keys["acme-app"]
    credentials = [*stack.keys.values(), "gwk_0123456789ab_" + "A" * 43, real[:-4] + "AAAA",
                   stack.idp.token("acme", "ada"), stack.idp.token("acme", "ada", lifetime=-120),
                   stack.idp.token("umbrella", "peter"), _tampered(stack), _hs256_with_public_key(stack),
                   unsigned_token({"iss": "x", "aud": "y", "sub": "u", "tenant": "acme", "exp": int(time.time()) + 60})]
    for credential in credentials:
        chat(stack, credential, {"model": "fake-chat", "messages": [{"role": "user", "content": "log scan"}]})
        chat(stack, credential, {"model": "fake-chat", "messages": "not a list"})  # refused after authentication
    log = stack.log.read_text()
    leaked = [c[:12] + "..." for c in credentials if c in log]
    # A token's signature alone would be enough to replay part of it: check those too.
    leaked += [c[:12] + "..." for c in credentials if c.count(".") == 2 and c.split(".")[2] and c.split(".")[2] in log]
    assert not leaked
