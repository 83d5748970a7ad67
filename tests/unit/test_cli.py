"""The operator's CLI on gateway.yaml, through `gateway`'s own entry point, and what the running gateway makes of it.

The app runs in process (tests/support/inprocess.py) on the same gateway.yaml, so a CLI change is seen on the
next request, as in production.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from wrapper.audit.signing import Signer
from wrapper.cli import main

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def on(gateway, *args: str) -> list[str]:
    """The arguments, with this gateway's config and LiteLLM config after the subcommand."""
    return [*args, "--config", str(gateway.config), "--litellm-config", str(gateway.config.parent / "litellm_config.yaml")]


async def status_with(gateway, key: str) -> int:
    reply = await gateway.client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
    return reply.status_code


async def test_global_options_work_before_and_after_the_subcommand(gateway, capsys, tmp_path):
    other = tmp_path / "other.yaml"
    assert cli(capsys, "--config", str(other), "tenants", "add", "before")[0] == 0
    assert cli(capsys, "tenants", "add", "after", "--config", str(other))[0] == 0
    assert cli(capsys, "--config", str(gateway.config), "tenants", "add", "late", "--config", str(other))[0] == 0
    assert set(yaml.safe_load(other.read_text())["tenants"]) == {"before", "after", "late"}  # the later one wins
    assert "late" not in yaml.safe_load(gateway.config.read_text())["tenants"]


async def test_tenants_list_show_edit_and_remove_and_the_gateway_follows(gateway, capsys):
    code, out, _ = cli(capsys, *on(gateway, "tenants", "add", "globex", "--models", "fake-chat", "--endpoints", "bot"))
    assert code == 0
    code, out, _ = cli(capsys, *on(gateway, "keys", "create", "--tenant", "globex", "--name", "app", "--json"))
    key = json.loads(out)["key"]
    assert await status_with(gateway, key) == 200

    rows = json.loads(cli(capsys, *on(gateway, "tenants", "list", "--json"))[1])
    assert {row["id"]: row["keys"] for row in rows} == {"acme": 4, "globex": 1}
    shown = json.loads(cli(capsys, *on(gateway, "tenants", "show", "globex"))[1])
    assert shown["models"] == ["fake-chat"] and shown["pii"]["mode"] == "off"  # defaults included

    assert cli(capsys, *on(gateway, "tenants", "edit", "globex", "--models", "fake-echo"))[0] == 0
    assert await status_with(gateway, key) == 403  # fake-chat is no longer its
    code, _, err = cli(capsys, *on(gateway, "tenants", "edit", "globex", "--models", "no-such-model"))
    assert code == 2 and "no-such-model" in err  # LiteLLM serves no such model: refused, nothing written
    assert yaml.safe_load(gateway.config.read_text())["tenants"]["globex"]["models"] == ["fake-echo"]

    code, out, _ = cli(capsys, *on(gateway, "tenants", "remove", "globex"))
    assert code == 0 and "1 key" in out
    assert await status_with(gateway, key) == 401
    assert all(k["tenant"] != "globex" for k in yaml.safe_load(gateway.config.read_text())["keys"])


async def test_an_endpoint_with_keys_bound_to_it_cannot_be_removed(gateway, capsys):
    code, _, err = cli(capsys, *on(gateway, "tenants", "edit", "acme", "--remove-endpoint", "enforced"))
    assert code == 2 and "bound" in err


async def test_keys_list_never_shows_a_secret(gateway, capsys):
    text = cli(capsys, *on(gateway, "keys", "list"))[1] + cli(capsys, *on(gateway, "keys", "list", "--json"))[1]
    for key in gateway.keys.values():
        assert key not in text and key.split("_", 2)[2] not in text  # gwk_<id>_<secret>: the id is shown, never the secret
    assert "sha256:" not in text
    rows = json.loads(cli(capsys, *on(gateway, "keys", "list", "--tenant", "acme", "--json"))[1])
    assert {row["state"] for row in rows} == {"active"} and len(rows) == 4


async def test_a_rotated_key_works_through_its_grace_period_and_is_refused_after_it(gateway, capsys):
    old = gateway.keys["acme"]
    old_id = old.split("_")[1]
    code, out, _ = cli(capsys, *on(gateway, "keys", "rotate", old_id, "--grace", "2s", "--json"))
    assert code == 0
    rotated = json.loads(out)
    assert rotated["rotated_from"] == old_id
    assert await status_with(gateway, rotated["key"]) == 200
    assert await status_with(gateway, old) == 200  # within the grace period
    await asyncio.sleep(2.2)
    assert await status_with(gateway, old) == 401
    assert await status_with(gateway, rotated["key"]) == 200
    states = {row["id"]: row["state"] for row in json.loads(cli(capsys, *on(gateway, "keys", "list", "--json"))[1])}
    assert states[old_id] == "expired" and states[rotated["id"]] == "active"


async def test_a_key_created_to_expire_is_refused_from_then_on(gateway, capsys):
    out = cli(capsys, *on(gateway, "keys", "create", "--tenant", "acme", "--name", "ci", "--expires", "2s"))[1]
    key = out.strip().splitlines()[-1]
    assert await status_with(gateway, key) == 200
    await asyncio.sleep(2.2)
    assert await status_with(gateway, key) == 401
    code, _, err = cli(capsys, *on(gateway, "keys", "create", "--tenant", "acme", "--name", "x", "--expires", "soon"))
    assert code == 2 and "soon" in err


def test_config_check_names_an_unknown_model_an_unknown_endpoint_and_an_invalid_policy(tmp_path, capsys):
    litellm = tmp_path / "litellm_config.yaml"
    litellm.write_text("model_list:\n  - model_name: real\n    litellm_params: {model: openai/real}\n"
                       "    model_info: {gateway_tier: cheap}\n"
                       "router_settings: {allowed_fails_policy: {NotFoundErrorAllowedFails: 1000000}}\n")
    config = tmp_path / "gateway.yaml"
    cases = {
        "unknown model": ({"tenants": {"acme": {"models": ["real", "imaginary"]}}}, "tenants.acme.models[1]: unknown model 'imaginary'"),
        "unknown endpoint": ({"tenants": {"acme": {"models": ["real"]}},
                              "keys": [{"id": "0123456789ab", "tenant": "acme", "name": "k", "endpoint": "nowhere",
                                        "hash": "sha256:" + "0" * 64}]}, "endpoint 'nowhere'"),
        "invalid policy": ({"tenants": {"acme": {"models": ["real"], "pii": {"mode": "sometimes"}}}}, "tenants.acme.pii.mode"),
        "unknown tier": ({"tenants": {"acme": {"models": ["real"], "endpoints": {"bot": {
            "routing": {"tiers": {"cheap": 0, "premium": 0.5}}}}}}}, "tenants.acme.endpoints.bot.routing.tiers.premium"),
    }
    for name, (data, expected) in cases.items():
        config.write_text(yaml.safe_dump(data))
        code, out, err = cli(capsys, "config", "check", "--config", str(config), "--litellm-config", str(litellm))
        assert code == 1 and expected in out + err, name
    config.write_text(yaml.safe_dump({"tenants": {"acme": {"models": ["real"]}}}))
    code, out, _ = cli(capsys, "config", "check", "--config", str(config), "--litellm-config", str(litellm), "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "problems": []}
    # A LiteLLM config that lets one tenant's provider 404 cool a deployment down for all (issue 16's finding)
    litellm.write_text(litellm.read_text().replace("router_settings: {allowed_fails_policy: {NotFoundErrorAllowedFails: 1000000}}\n", ""))
    code, out, err = cli(capsys, "config", "check", "--config", str(config), "--litellm-config", str(litellm))
    assert code == 1 and "NotFoundErrorAllowedFails is unset" in out + err


async def test_config_show_is_the_config_in_force_without_key_hashes(gateway, capsys):
    shown = json.loads(cli(capsys, *on(gateway, "config", "show"))[1])
    assert shown["tenants"]["acme"]["audit"]["content"] == "hash"  # defaults included
    assert {key["hash"] for key in shown["keys"]} == {"(elided)"}


def test_the_public_key_printed_checks_the_gateways_signatures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GATEWAY_VAR_DIR", str(tmp_path / "var"))
    signer = Signer.load_or_create(None, tmp_path / "var" / "audit-signing.key")  # what the gateway signs with
    out = json.loads(cli(capsys, "audit", "public-key", "--json")[1])
    assert out["key_id"] == signer.key_id
    public = load_pem_public_key(out["pem"].encode())
    public.verify(base64.b64decode(signer.sign(b"checkpoint")), b"checkpoint")  # raises if it does not match


async def test_edits_keep_comments_and_the_file_mode_and_leave_no_lock_file(gateway, capsys):
    text = gateway.config.read_text()
    gateway.config.write_text("# Owned by the platform team; reviewed in PR.\n" + text.replace(
        "acme:", "acme:  # our first tenant", 1))
    os.chmod(gateway.config, 0o640)
    assert cli(capsys, *on(gateway, "tenants", "add", "globex"))[0] == 0
    assert cli(capsys, *on(gateway, "keys", "revoke", gateway.keys["acme"].split("_")[1]))[0] == 0
    text = gateway.config.read_text()
    assert text.startswith("# Owned by the platform team; reviewed in PR.\n") and "# our first tenant" in text
    assert stat.S_IMODE(gateway.config.stat().st_mode) == 0o640
    assert sorted(p.name for p in gateway.config.parent.iterdir() if p.name.startswith(("gateway", ".gateway"))) == \
        ["gateway.yaml"]


@pytest.mark.parametrize("name", ["x\nkeys: []", "off", "yes", "{a: 1}", "- item", "'quoted'", "# not a comment"])
async def test_a_hostile_display_name_stays_a_name(gateway, capsys, name):
    assert cli(capsys, *on(gateway, "tenants", "add", "globex", "--display-name", name))[0] == 0
    data = yaml.safe_load(gateway.config.read_text())
    assert data["tenants"]["globex"]["name"] == name
    assert len(data["keys"]) == 4  # no key list replaced


@pytest.mark.parametrize("tenant", ["../etc", "ACME", "a b", "x" * 65, ""])
def test_a_bad_tenant_id_is_refused_and_nothing_is_written(tmp_path, capsys, tenant):
    config = tmp_path / "gateway.yaml"
    config.write_text("tenants: {}\n")
    code, _, err = cli(capsys, "tenants", "add", tenant, "--config", str(config))
    assert code == 2 and "tenant" in err
    assert config.read_text() == "tenants: {}\n"
