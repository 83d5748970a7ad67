"""The helm chart (helm/), rendered and linted offline by Helm's own Go SDK (helm-python-sdk).

No cluster and no image here: these tests check what the chart would ask of
Kubernetes, and that the configuration it mounts is one the gateway accepts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.identity import gateway_cli
from wrapper.config import load_config

helm = pytest.importorskip("helm_python")

CHART = Path(__file__).resolve().parents[2] / "helm"


def render(values: dict | None = None) -> dict[str, list[dict]]:
    """Kind -> the manifests of that kind."""
    rendered = helm.Chart.load(CHART).render(values, name="gw", namespace="ai", is_install=True)
    by_kind: dict[str, list[dict]] = {}
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            for manifest in yaml.safe_load_all(text):
                if manifest:
                    by_kind.setdefault(manifest["kind"], []).append(manifest)
    return by_kind


def test_the_chart_lints_clean():
    report = helm.lint(CHART, strict=True)
    assert report["errors"] == [] and all(m["severity"] < 2 for m in report["messages"]), report


def test_one_pod_runs_the_pair_and_serves_only_the_wrapper():
    manifests = render()
    [deployment] = manifests["Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["gateway", "up"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]  # LiteLLM stays on the pod's loopback
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_HOST"]["value"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [service] = manifests["Service"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_secrets_come_from_a_secret_and_never_from_values():
    [deployment] = render()["Deployment"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("GATEWAY_DATABASE_URL", "GATEWAY_LITELLM_MASTER_KEY", "GATEWAY_INTERNAL_SECRET",
                 "GATEWAY_AUDIT_SIGNING_KEY", "GATEWAY_METRICS_TOKEN", "LANGFUSE_SECRET_KEY"):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == "llm-gateway" and "value" not in env[name]
    # Every replica must sign audit checkpoints with the same key: it is required, not optional.
    assert "optional" not in env["GATEWAY_AUDIT_SIGNING_KEY"]["valueFrom"]["secretKeyRef"]
    assert env["LANGFUSE_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_mounted_configuration_is_one_the_gateway_accepts(tmp_path):
    written = tmp_path / "written.yaml"  # as the platform team writes it, with the CLI, then --set-file
    gateway_cli(written, "tenants", "add", "acme")
    key = gateway_cli(written, "keys", "create", "--tenant", "acme", "--name", "app")
    manifests = render({"gatewayConfig": written.read_text()})
    [config_map] = [m for m in manifests["ConfigMap"] if m["metadata"]["name"] == "gw-llm-gateway-config"]
    [secret] = manifests["Secret"]  # the key hashes: in a Secret, never a ConfigMap
    assert all("gateway.yaml" not in m.get("data", {}) for m in manifests["ConfigMap"])
    mounted = tmp_path / "gateway.yaml"
    mounted.write_text(secret["stringData"]["gateway.yaml"])
    config = load_config(mounted)
    assert set(config.tenants) == {"acme"} and key not in mounted.read_text()  # the key's hash only
    litellm = yaml.safe_load(config_map["data"]["litellm_config.yaml"])
    assert "custom_callbacks.wrapper_only_guard" in litellm["litellm_settings"]["callbacks"]


def test_the_grafana_dashboard_ships_with_the_chart_for_the_sidecar():
    [dashboard] = [m for m in render()["ConfigMap"] if m["metadata"]["name"] == "gw-llm-gateway-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["llm-gateway.json"])
    assert shipped == json.loads((CHART / "dashboards" / "llm-gateway.json").read_text())
    without = render({"dashboards": {"enabled": False}})["ConfigMap"]
    assert [m["metadata"]["name"] for m in without] == ["gw-llm-gateway-config"]


def test_migrations_run_once_per_release_before_the_pods():
    [job] = render()["Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["gateway", "db", "upgrade"]


def test_autoscaling_and_the_service_monitor_when_asked_for():
    manifests = render({"autoscaling": {"enabled": True, "maxReplicas": 6},
                        "metrics": {"serviceMonitor": {"enabled": True}}})
    [hpa] = manifests["HorizontalPodAutoscaler"]
    assert hpa["spec"]["maxReplicas"] == 6 and "replicas" not in manifests["Deployment"][0]["spec"]
    [monitor] = manifests["ServiceMonitor"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["authorization"]["credentials"]["key"] == "metrics-token"
    assert "HorizontalPodAutoscaler" not in render() and "ServiceMonitor" not in render()


def test_both_files_are_mounted_in_one_folder_the_config_from_a_secret():
    [deployment] = render()["Deployment"]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    sources = volume["projected"]["sources"]
    assert {"configMap": {"name": "gw-llm-gateway-config"}} in sources
    assert {"secret": {"name": "gw-llm-gateway-gateway-config"}} in sources


def test_a_service_account_of_its_own_without_an_api_token():
    manifests = render()
    [account] = manifests["ServiceAccount"]
    pod = manifests["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"] == "gw-llm-gateway"
    assert pod["automountServiceAccountToken"] is False and account["automountServiceAccountToken"] is False


def test_a_disruption_budget_and_a_network_policy_that_admits_only_the_wrappers_port():
    manifests = render()
    [budget] = manifests["PodDisruptionBudget"]
    selector = manifests["Deployment"][0]["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["minAvailable"] == 1 and budget["spec"]["selector"]["matchLabels"] == selector
    [policy] = manifests["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector and policy["spec"]["policyTypes"] == ["Ingress"]
    assert [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]] == [8080]  # never LiteLLM's
    narrowed = render({"networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {"team": "edge"}}}]}})
    assert narrowed["NetworkPolicy"][0]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {"team": "edge"}


def test_an_ingress_when_asked_for_routes_to_the_service():
    assert "Ingress" not in render()
    [ingress] = render({"ingress": {"enabled": True, "className": "nginx", "hosts": ["gw.example.org"],
                                    "tls": [{"secretName": "gw-tls", "hosts": ["gw.example.org"]}]}})["Ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx" and ingress["spec"]["tls"][0]["secretName"] == "gw-tls"
    [rule] = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert rule["host"] == "gw.example.org" and backend == {"name": "gw-llm-gateway", "port": {"name": "http"}}


def test_the_charts_default_litellm_config_is_the_tuned_one_with_the_demo_provider():
    [config_map] = [m for m in render()["ConfigMap"] if m["metadata"]["name"] == "gw-llm-gateway-config"]
    litellm = yaml.safe_load(config_map["data"]["litellm_config.yaml"])
    assert litellm["general_settings"]["custom_auth"] == "custom_callbacks.master_key_auth.user_api_key_auth"
    assert litellm["litellm_settings"]["custom_provider_map"][0]["provider"] == "gateway-demo"


def test_shutdown_waits_for_the_drain_before_kubernetes_kills_the_pod():
    pod = render({"shutdown": {"graceSeconds": 40, "preStopSleepSeconds": 5}})["Deployment"][0]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_SHUTDOWN_GRACE_SECONDS"] == "40"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    # the drain (40), gateway up's margin before it kills the wrapper (10) and LiteLLM's stop fit in the period
    assert pod["terminationGracePeriodSeconds"] >= 5 + 40 + 10 + 10


def test_litellm_runs_two_workers_so_that_one_crashing_is_not_an_outage():
    [container] = render()["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in container["env"]}["GATEWAY_LITELLM_WORKERS"] == "2"
