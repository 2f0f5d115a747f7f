"""Security review of the rendered chart (issue 6, item 6), for every cluster profile."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from chartcases import CLUSTER_PROFILES, rendered

from dogbooth.render import chart
from dogbooth.settings import profiles

DASHBOARD_PORT = 8265
METRICS_PORTS = [8080, 44217, 44227]  # Ray's exporters: metrics-export-port, autoscaler, dashboard
SECRET_LIKE = re.compile(r"token|key|secret|password", re.IGNORECASE)


def _serve_port(name: str) -> int:
    return rendered(name).profile.serve.http_port


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_pods_run_as_non_root(name: str) -> None:
    for pod, spec in rendered(name).pod_specs().items():
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, pod
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", pod
    for key, container in rendered(name).containers().items():
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx.get("runAsUser", 1000) != 0, key
        assert ctx.get("privileged", False) is False, key


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_no_privilege_escalation_and_all_capabilities_dropped(name: str) -> None:
    for key, container in rendered(name).containers().items():
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, key
        assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add"), key


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_every_container_has_requests_and_limits(name: str) -> None:
    containers = rendered(name).containers()
    assert len(containers) >= 2
    for key, container in containers.items():
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][part]), f"{key}: {part}"


# kind: ingress-nginx rewrites the regex match; eks: an ALB (AWS Load Balancer Controller) whose
# url-rewrite transform strips the same prefix. Either way only /dogbooth/serve/... reaches Serve.
_ROUTES = {"nginx": ("/dogbooth/serve/(.*)", "ImplementationSpecific"), "alb": ("/dogbooth/serve/", "Prefix")}


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_no_ingress_routes_to_the_dashboard(name: str) -> None:
    ingresses = rendered(name).of_kind("Ingress")
    assert ingresses, "the profile enables an Ingress"
    for ingress in ingresses:
        cls = ingress["spec"]["ingressClassName"]
        assert cls == ("alb" if name == "eks" else "nginx")
        assert "defaultBackend" not in ingress["spec"]
        paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        assert [(p["path"], p["pathType"]) for p in paths] == [_ROUTES[cls]]
        for p in paths:
            port = p["backend"]["service"]["port"]
            assert port == {"number": _serve_port(name)} and port["number"] != DASHBOARD_PORT
            assert "dashboard" not in p["backend"]["service"]["name"]
            assert p["backend"]["service"]["name"].endswith("-serve-svc")
        annotations = ingress["metadata"]["annotations"]
        if cls == "nginx":
            assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"
        else:
            service = paths[0]["backend"]["service"]["name"]
            (transform,) = json.loads(annotations[f"alb.ingress.kubernetes.io/transforms.{service}"])
            assert transform["urlRewriteConfig"]["rewrites"] == [{"regex": "^/dogbooth/serve/(.*)$", "replace": "/$1"}]
            assert not any(k.startswith("nginx.") for k in annotations)


def _rules(name: str) -> list[dict[str, Any]]:
    (policy,) = rendered(name).of_kind("NetworkPolicy")
    pods = {tuple(sorted(spec_labels.items())) for spec_labels in _pod_labels(name)}
    selector = tuple(sorted(policy["spec"]["podSelector"]["matchLabels"].items()))
    assert all(set(selector) <= set(p) for p in pods), "the policy must select every Ray pod"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules: list[dict[str, Any]] = policy["spec"]["ingress"]
    return rules


def _pod_labels(name: str) -> list[dict[str, str]]:
    cluster = rendered(name).rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["metadata"]["labels"] for g in groups]


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_network_policy_admits_only_the_serve_port_from_outside(name: str) -> None:
    own = rendered(name).of_kind("NetworkPolicy")[0]["spec"]["podSelector"]
    for rule in _rules(name):
        ports = [p["port"] for p in rule.get("ports", [])]
        peers = rule.get("from", [])
        if not peers:  # open to every source: the Serve port and nothing else
            assert ports == [_serve_port(name)]
        elif ports == [DASHBOARD_PORT]:  # the operator, and only the operator, deploys serveConfigV2
            (peer,) = peers
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
            assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kuberay-system"}
        elif ports == METRICS_PORTS:  # Prometheus, from its own namespace, reads the exporters only
            (peer,) = peers
            assert set(peer) == {"namespaceSelector"}
            assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
            assert rendered(name).profile.cluster.addons.monitoring  # type: ignore[union-attr]
        else:  # Ray's own pods talk to each other on every port
            assert peers == [{"podSelector": own}], rule


def test_network_policy_is_behind_a_value() -> None:
    values = copy.deepcopy(rendered("eks").values)
    values["networkPolicy"]["enabled"] = False
    kinds = {o["kind"] for o in chart.manifests(chart.render_manifests(values))}
    assert "NetworkPolicy" not in kinds and "RayService" in kinds
    values["networkPolicy"].update(enabled=True, metricsNamespace="monitoring")
    (policy,) = [o for o in chart.manifests(chart.render_manifests(values)) if o["kind"] == "NetworkPolicy"]
    scrape = policy["spec"]["ingress"][-1]
    assert scrape["ports"] == [{"port": port, "protocol": "TCP"} for port in METRICS_PORTS]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_secrets_are_only_references(name: str) -> None:
    r = rendered(name)
    assert not r.of_kind("Secret"), "the chart must not carry secrets"
    for key, container in r.containers().items():
        for env in container.get("env", []):
            if SECRET_LIKE.search(env["name"]):
                assert "value" not in env, f"{key}: {env['name']} is inlined"
                assert set(env["valueFrom"]) == {"secretKeyRef"}, f"{key}: {env['name']}"


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_hf_token_and_api_key_come_from_their_secrets(name: str) -> None:
    r = rendered(name)
    settings = chart.settings(r.profile)
    for key, container in r.containers().items():
        env = {e["name"]: e for e in container.get("env", [])}
        on_worker = key.startswith("worker:")
        api_key = env.get(r.profile.serve.app.api_key_env)
        if on_worker and settings.api_key.enabled:
            ref = api_key["valueFrom"]["secretKeyRef"]  # type: ignore[index]
            assert (ref["name"], ref["key"]) == (
                settings.api_key.secret.secret_name,
                settings.api_key.secret.secret_key,
            )
            assert ref.get("optional") is not True  # no key Secret, no pod: never an open endpoint by accident
        else:
            assert api_key is None, key
        if on_worker and settings.hf_token:
            ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == settings.hf_token.secret_name
        else:
            assert "HF_TOKEN" not in env, key


def test_secret_values_in_the_environment_never_reach_the_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGBOOTH_API_KEY", "planted-api-key-5f1c")
    monkeypatch.setenv("HF_TOKEN", "hf_planted_token_77aa")
    profile = profiles.load("eks")
    text = "\n".join(chart.render_manifests(chart.chart_values(profile)).values())
    assert "planted" not in text
