"""Monitoring in the chart and the add-ons: the PodMonitor, the dashboard ConfigMaps, the DCGM exporter.

Rendered by the real Helm engine; the PodMonitor is checked against the pinned prometheus-operator
v0.93.0 CRD, the ConfigMaps against the Kubernetes schemas.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from chartcases import CLUSTER_PROFILES, GPU_PROFILES, rendered

from dogbooth.core.names import GPU_NODE_LABEL
from dogbooth.render import chart, dashboards, k8svalidate, releases
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile

needs_crds = pytest.mark.skipif(
    k8svalidate.schema_dir() is None,
    reason=f"pinned CRDs absent: set {k8svalidate.SCHEMA_DIR_ENV} (nox -s fetch_schemas) or add ../shared",
)
CONFIGMAP_LIMIT = 1024 * 1024  # bytes of data in one ConfigMap (etcd's object limit)


def _with_monitoring(name: str, on: bool = True) -> Profile:
    data = profiles.load(name).model_dump()
    data["cluster"]["addons"]["monitoring"] = on
    return Profile.model_validate(data)


def _objects(profile: Profile) -> list[dict[str, Any]]:
    values = chart.chart_values(profile)
    return chart.manifests(chart.render_manifests(values, namespace=chart.settings(profile).namespace))


def _release(profile: Profile, name: str) -> releases.Release | None:
    return next((r for r in releases.releases_for(profile) if r.name == name), None)


def test_monitoring_is_on_by_default_in_eks_only() -> None:
    on = {n for n in CLUSTER_PROFILES if profiles.load(n).cluster.addons.monitoring}  # type: ignore[union-attr]
    assert on == {"eks"}
    kinds = {o["kind"] for o in rendered("kind-cpu").objects}
    assert not kinds & {"PodMonitor", "ConfigMap"}, "monitoring off: no PodMonitor, no dashboards"


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_podmonitor_scrapes_every_ray_exporter(name: str) -> None:
    objects = _objects(_with_monitoring(name))
    (monitor,) = [o for o in objects if o["kind"] == "PodMonitor"]
    (rs,) = [o for o in objects if o["kind"] == "RayService"]
    cluster = rs["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}
    selector = monitor["spec"]["selector"]
    # KubeRay adds ray.io/node-type to the pods it makes; the rest must be on our pod templates.
    assert [e["key"] for e in selector["matchExpressions"]] == ["ray.io/node-type"]
    wanted = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert wanted == {"metrics", "as-metrics", "dash-metrics"}
    for group_name, group in groups.items():
        template = group["template"]
        assert selector["matchLabels"].items() <= template["metadata"]["labels"].items(), group_name
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"]), group_name
        assert (wanted <= set(ports)) if group_name == "head" else ("metrics" in ports), group_name
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:  # Ray's dashboards filter on ray_io_cluster
        assert {"sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"], "targetLabel": "ray_io_cluster",
                "action": "replace"} in endpoint["relabelings"]  # fmt: skip
    assert monitor["metadata"]["namespace"] == chart.settings(profiles.load(name)).namespace


@needs_crds
def test_podmonitor_matches_the_prometheus_operator_crd() -> None:
    (monitor,) = rendered("eks").of_kind("PodMonitor")
    k8svalidate.validate_against_crd(monitor, k8svalidate.crd_path("PodMonitor"))
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"  # Prometheus durations only
    with pytest.raises(k8svalidate.ManifestInvalid, match="podMetricsEndpoints.0.interval"):
        k8svalidate.validate_against_crd(broken, k8svalidate.crd_path("PodMonitor"))


def test_dashboard_configmaps_are_the_files_labelled_for_the_grafana_sidecar() -> None:
    maps = rendered("eks").of_kind("ConfigMap")
    files = {p.name: p.read_text() for p in dashboards.DASHBOARDS_DIR.glob("*.json")}
    label, value = releases.DASHBOARD_LABEL
    shipped = {}
    for cm in maps:
        if cm["metadata"]["labels"].get(label) == value:
            k8svalidate.validate_k8s(cm)
            shipped.update(cm["data"])
            assert sum(len(v.encode()) for v in cm["data"].values()) < CONFIGMAP_LIMIT
    assert shipped == files  # byte for byte: Helm's .Files.Get, no templating of Grafana's {{legend}}
    sidecar = _release(profiles.load("eks"), "kube-prometheus-stack").values["grafana"]["sidecar"]  # type: ignore[union-attr]
    assert (sidecar["dashboards"]["label"], sidecar["dashboards"]["labelValue"]) == (label, value)
    assert sidecar["dashboards"]["searchNamespace"] == "ALL"  # our ConfigMaps are in the app's namespace
    assert sidecar["datasources"]["uid"] == releases.PROMETHEUS_DATASOURCE_UID
    assert sidecar["datasources"]["isDefaultDatasource"] is True  # what the dashboards' datasource variable picks


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_dcgm_exporter_runs_on_gpu_profiles_with_monitoring(name: str) -> None:
    assert _release(_with_monitoring(name, on=False), "dcgm-exporter") is None
    profile = _with_monitoring(name)
    dcgm = _release(profile, "dcgm-exporter")
    if name not in GPU_PROFILES:
        assert dcgm is None
        return
    assert dcgm is not None and dcgm.version == releases.DCGM_EXPORTER_VERSION
    order = [r.name for r in releases.releases_for(profile)]
    # The ServiceMonitor CRD comes with kube-prometheus-stack; the GPUs with the device plugin.
    assert order.index("kube-prometheus-stack") < order.index("nvidia-device-plugin") < order.index("dcgm-exporter")
    assert dcgm.namespace == releases.MONITORING_NAMESPACE
    assert dcgm.values["serviceMonitor"]["enabled"] is True
    assert dcgm.values["nodeSelector"] == {GPU_NODE_LABEL: "true"}
    worker = chart.settings(profile).worker
    assert {t.key for t in worker.tolerations} <= {t["key"] for t in dcgm.values["tolerations"]}
    assert dcgm.values.get("runtimeClassName") == (worker.runtime_class_name or None)


def test_prometheus_may_scrape_through_the_network_policy_and_the_operator_keeps_its_servicemonitor() -> None:
    (policy,) = rendered("eks").of_kind("NetworkPolicy")
    scrape = policy["spec"]["ingress"][-1]
    namespace = scrape["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert namespace == _release(profiles.load("eks"), "kube-prometheus-stack").namespace  # type: ignore[union-attr]
    operator = _release(profiles.load("eks"), "kuberay-operator")
    assert operator is not None and operator.values["metrics"]["serviceMonitor"]["enabled"] is True


def test_render_writes_the_monitoring_objects_and_the_exporter_release(tmp_path: Any) -> None:
    written = chart.render_all(profiles.load("eks"), tmp_path)
    names = {p.name for p in written}
    assert {"podmonitor.yaml", "dashboards.yaml", "releases.yaml"} <= names
    charts = [r["chart"] for r in yaml.safe_load((tmp_path / "releases.yaml").read_text())]
    assert {"kube-prometheus-stack", "dcgm-exporter"} <= set(charts)
