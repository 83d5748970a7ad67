"""docker-compose.yml, checked against the gateway it runs (no Docker engine runs here to start it).

What can drift is checked: every GATEWAY_* variable is a setting the gateway
reads, the mounted config folder holds configs that load, the database URL and
Langfuse's address name services of the file, the health check asks a route
the wrapper serves, and the Langfuse profile's project keys are the ones the
gateway is told to use.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from wrapper.app import create_app
from wrapper.cli.manage import config_problems
from wrapper.config import load_config
from wrapper.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GATEWAY = SERVICES["gateway"]


def with_defaults(value: str, environment: dict[str, str] | None = None) -> str:
    """Compose's `${NAME:-default}` interpolation, as with an empty shell (or the given variables)."""
    environment = environment or {}
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: environment.get(m.group(1)) or m.group(2), value)


def gateway_env(**shell: str) -> dict[str, str]:
    return {name: with_defaults(str(value), shell) for name, value in GATEWAY["environment"].items()}


def test_every_gateway_variable_is_a_setting_the_gateway_reads():
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    unknown = {name for name in gateway_env() if name.startswith("GATEWAY_")} - fields
    assert not unknown


def test_the_mounted_folder_holds_configs_that_load_at_the_paths_the_gateway_is_given():
    [config_mount] = [v for v in GATEWAY["volumes"] if v.endswith(":/etc/gateway:ro")]
    folder = ROOT / config_mount.split(":")[0]
    env = gateway_env()
    for variable in ("GATEWAY_CONFIG", "GATEWAY_LITELLM_CONFIG"):
        path = Path(env[variable])
        assert path.parent == Path("/etc/gateway")
        assert (folder / path.name).is_file()
    config = load_config(folder / Path(env["GATEWAY_CONFIG"]).name)  # raises on a config the gateway would refuse
    assert yaml.safe_load((folder / Path(env["GATEWAY_LITELLM_CONFIG"]).name).read_text())["model_list"]
    # What it ships runs: a demo tenant on the demo models, and every tenant's models served by LiteLLM's config.
    assert config.tenants["demo"].models == ["demo", "demo-frontier", "demo-embedding", "demo-image"]
    settings = Settings(config=folder / "gateway.yaml", litellm_config=folder / "litellm_config.yaml")
    assert config_problems(config, settings) == []
    # Readable by the image's user (uid 10001), whoever owns the files on the host: git keeps them 0644.
    for name in ("gateway.yaml", "litellm_config.yaml"):
        mode = subprocess.run(["git", "ls-files", "-s", name], cwd=ROOT, capture_output=True, text=True).stdout.split()[0]
        assert mode == "100644", name


def test_the_gateway_keeps_its_limits_on_the_compose_redis_and_waits_for_it():
    redis = SERVICES["redis"]
    assert redis["healthcheck"]["test"][-1] == "ping" and "profiles" not in redis
    url = urlsplit(gateway_env()["GATEWAY_REDIS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    assert SERVICES["gateway"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    # The image's own command names the same files.
    assert "/etc/gateway/gateway.yaml" in (ROOT / "Dockerfile").read_text()


def test_the_audit_database_is_the_compose_postgres_and_the_gateway_waits_for_it():
    url = urlsplit(gateway_env()["GATEWAY_DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    postgres = SERVICES[url.hostname]
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    assert url.password == with_defaults(postgres["environment"]["POSTGRES_PASSWORD"])
    assert url.path.lstrip("/") == postgres["environment"]["POSTGRES_DB"]
    assert "healthcheck" in postgres and GATEWAY["depends_on"][url.hostname] == {"condition": "service_healthy"}
    assert "profiles" not in postgres  # the audit store is never optional


def test_the_health_check_asks_the_wrapper_for_readiness_on_its_port():
    [url] = re.findall(r"http://[^']+", " ".join(GATEWAY["healthcheck"]["test"]))
    assert urlsplit(url).port == Settings.model_fields["port"].default
    assert GATEWAY["ports"] == [f"{urlsplit(url).port}:{urlsplit(url).port}"]
    app = create_app(Settings(internal_secret="x", var_dir=ROOT / "var" / "compose-test"))
    routes = {getattr(route, "path", None) for route in app.api.routes}
    assert urlsplit(url).path in routes


@pytest.mark.parametrize("shell", [{}, {"LANGFUSE_PUBLIC_KEY": "pk-lf-local", "LANGFUSE_SECRET_KEY": "sk-lf-local"}])
def test_langfuse_is_off_without_keys_and_its_profile_serves_the_project_the_gateway_names(shell):
    env = gateway_env(**shell)
    if not shell:
        assert env["LANGFUSE_PUBLIC_KEY"] == env["LANGFUSE_SECRET_KEY"] == ""  # off: no exporter, no trace
        return
    web = SERVICES[urlsplit(env["LANGFUSE_BASE_URL"]).hostname]
    assert web["profiles"] == ["langfuse"]
    assert web["environment"]["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"] == env["LANGFUSE_PUBLIC_KEY"]
    assert web["environment"]["LANGFUSE_INIT_PROJECT_SECRET_KEY"] == env["LANGFUSE_SECRET_KEY"]
    # Every store Langfuse's URLs name is a service of the same profile, waited for.
    for variable in ("DATABASE_URL", "CLICKHOUSE_URL", "CLICKHOUSE_MIGRATION_URL", "LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"):
        host = urlsplit(web["environment"][variable]).hostname
        assert SERVICES[host]["profiles"] == ["langfuse"] and host in web["depends_on"]
    assert web["environment"]["REDIS_HOST"] in web["depends_on"]


def test_only_the_gateway_its_database_and_redis_run_without_a_profile_and_every_volume_is_declared():
    assert {name for name, service in SERVICES.items() if "profiles" not in service} == {"gateway", "postgres", "redis"}
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert named == set(COMPOSE["volumes"])
