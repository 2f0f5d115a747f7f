"""charts/dogbooth rendered by the real Helm engine for every cluster profile, checked against the
Kubernetes schemas and the pinned KubeRay 1.7.0 CRDs; no cluster needed."""

from __future__ import annotations

import ast
import copy
import io
import re
import tokenize
from pathlib import Path

import pytest
import yaml
from chartcases import CLUSTER_PROFILES, GPU_PROFILES, rendered

from dogbooth import cli
from dogbooth.core.errors import ChartError, ProfileError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.render import chart, k8svalidate
from dogbooth.render.releases import KUBERAY_VERSION
from dogbooth.render.serveconfig import serve_config
from dogbooth.settings import profiles

needs_crds = pytest.mark.skipif(
    k8svalidate.schema_dir() is None,
    reason=f"pinned CRDs absent: set {k8svalidate.SCHEMA_DIR_ENV} (nox -s fetch_schemas) or add ../shared",
)


def test_every_cluster_profile_has_a_chart_section() -> None:
    assert set(CLUSTER_PROFILES) >= {"kind-cpu", "kind-gpu", "eks"}
    assert all(profiles.load(name).chart is not None for name in CLUSTER_PROFILES)
    assert profiles.load("local").chart is None
    with pytest.raises(ProfileError, match="chart: missing"):
        chart.chart_values(profiles.load("local"))


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_helm_lint_is_clean(name: str) -> None:
    assert chart.lint(rendered(name).values) == []


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_builtin_manifests_match_kubernetes_schemas(name: str) -> None:
    kinds = set()
    for obj in rendered(name).objects:
        if obj["kind"] not in k8svalidate.CRD_FILES:
            k8svalidate.validate_k8s(obj)
            kinds.add(obj["kind"])
    assert {"Ingress", "NetworkPolicy"} <= kinds


@needs_crds
@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_rayservice_matches_kuberay_crd(name: str) -> None:
    rs = rendered(name).rayservice
    assert rs["apiVersion"] == "ray.io/v1"
    k8svalidate.validate_against_crd(rs, k8svalidate.crd_path("RayService"))


@needs_crds
def test_crd_check_rejects_the_blueprints_rayservice() -> None:
    """The JARK sample's v1alpha1 + serveConfig shape must fail here, as the operator rejects it."""
    old = copy.deepcopy(rendered("eks").rayservice)
    old["spec"]["serveConfig"] = old["spec"].pop("serveConfigV2")
    with pytest.raises(k8svalidate.ManifestInvalid, match="serveConfig' was unexpected"):
        k8svalidate.validate_against_crd(old, k8svalidate.crd_path("RayService"))
    old["apiVersion"] = "ray.io/v1alpha1"
    with pytest.raises(k8svalidate.ManifestInvalid, match="v1alpha1 is deprecated"):
        k8svalidate.validate_against_crd(old, k8svalidate.crd_path("RayService"))


def test_kubernetes_check_rejects_unknown_fields() -> None:
    ingress = copy.deepcopy(rendered("kind-cpu").of_kind("Ingress")[0])
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["port"] = 8265
    with pytest.raises(k8svalidate.ManifestInvalid, match="spec.rules.0.http.paths.0.backend"):
        k8svalidate.validate_k8s(ingress)


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_serve_config_v2_is_the_profiles_serve_config(name: str) -> None:
    r = rendered(name)
    embedded = yaml.safe_load(r.rayservice["spec"]["serveConfigV2"])
    assert embedded == serve_config(r.profile, "image")


def test_code_revision_reaches_serve_config_v2() -> None:
    profile = profiles.load("kind-cpu")
    values = chart.chart_values(profile, code_revision="abc123")
    (rs,) = [o for o in chart.manifests(chart.render_manifests(values)) if o["kind"] == "RayService"]
    assert yaml.safe_load(rs["spec"]["serveConfigV2"]) == serve_config(profile, "abc123")


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_gpus_only_on_gpu_profiles_workers(name: str) -> None:
    r = rendered(name)
    for key, container in r.containers().items():
        res = container["resources"]
        gpu = {res["requests"].get("nvidia.com/gpu"), res["limits"].get("nvidia.com/gpu")}
        if key.startswith("worker:") and name in GPU_PROFILES:
            assert gpu == {r.profile.serve.deployment.num_gpus}, key
        else:
            assert gpu == {None}, f"{key} requests a GPU in {name}"
    for pod, spec in r.pod_specs().items():
        tolerated = {t["key"] for t in spec.get("tolerations", [])}
        assert ("nvidia.com/gpu" in tolerated) == (pod.startswith("worker:") and name in GPU_PROFILES), pod
    head = r.rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no replica can land on the head
    (app,) = yaml.safe_load(r.rayservice["spec"]["serveConfigV2"])["applications"]
    expected = ("cuda", "float16") if name in GPU_PROFILES else ("cpu", "float32")
    assert (app["args"]["device"], app["args"]["dtype"]) == expected


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_every_image_is_pinned(name: str) -> None:
    for key, container in rendered(name).containers().items():
        image = container.get("image", rendered(name).containers()["head/ray-head"]["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag not in {"", "latest"}, f"{key}: {image}"


def test_image_override_reaches_every_container() -> None:
    r = rendered("eks", "123456789012.dkr.ecr.us-west-2.amazonaws.com/dogbooth-serve:0.1.0-cu126-3f2a")
    images = {c["image"] for c in r.containers().values() if "image" in c}
    assert images == {"123456789012.dkr.ecr.us-west-2.amazonaws.com/dogbooth-serve:0.1.0-cu126-3f2a"}
    for bad in ["dogbooth-serve", "dogbooth-serve:latest", "localhost:5000/dogbooth-serve"]:
        with pytest.raises(ChartError, match="pinned"):
            chart.chart_values(profiles.load("kind-cpu"), image=bad)


def test_chart_schema_refuses_latest_even_without_python() -> None:
    values = copy.deepcopy(rendered("kind-cpu").values)
    values["image"]["tag"] = "latest"
    with pytest.raises(ChartError, match="tag"):
        chart.render_manifests(values)


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_model_cache_is_mounted_where_the_app_caches(name: str) -> None:
    r = rendered(name)
    (worker,) = [s for pod, s in r.pod_specs().items() if pod.startswith("worker:")]
    (volume,) = [v for v in worker["volumes"] if v["name"] == "model-cache"]
    cache = r.profile.chart.model_cache  # type: ignore[union-attr]
    if cache.kind == "pvc":
        (pvc,) = r.of_kind("PersistentVolumeClaim")
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        claim = pvc["spec"]
    else:
        claim = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == cache.storage_class
    assert claim["resources"]["requests"]["storage"] == cache.size
    container = worker["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model-cache"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert Path(env["DOGBOOTH_CACHE"]).parent == Path(mount["mountPath"])
    assert Path(env["HF_HOME"]).parent == Path(mount["mountPath"])


def test_eks_takes_a_gp3_claim_per_worker_and_kind_a_kept_local_path_claim() -> None:
    eks = rendered("eks").values["modelCache"]
    assert (eks["kind"], eks["storageClass"]) == ("ephemeral", "gp3")
    # No model-cache claim on eks; the one claim is the training volume (training Job and pipeline).
    claims = rendered("eks").of_kind("PersistentVolumeClaim")
    assert [c["metadata"]["name"] for c in claims] == ["dogbooth-training"]
    (pvc,) = rendered("kind-cpu").of_kind("PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "standard"  # kind's local-path provisioner
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # weights outlive an uninstall


def test_host_path_cache_for_prepared_nodes() -> None:
    values = copy.deepcopy(rendered("kind-cpu").values)
    values["modelCache"].update(kind="hostPath", hostPath="/var/lib/dogbooth/cache")
    objects = chart.manifests(chart.render_manifests(values))
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    (rs,) = [o for o in objects if o["kind"] == "RayService"]
    (volume,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"]
    assert volume["hostPath"] == {"path": "/var/lib/dogbooth/cache", "type": "DirectoryOrCreate"}


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_api_key_env_only_where_enabled(name: str) -> None:
    r = rendered(name)
    (worker,) = [c for k, c in r.containers().items() if k.startswith("worker:")]
    names = {e["name"] for e in worker["env"]}
    enabled = r.profile.chart.api_key.enabled  # type: ignore[union-attr]
    assert (r.profile.serve.app.api_key_env in names) == enabled
    assert enabled == (name == "eks")  # on by default where the endpoint leaves the workstation


def test_profile_chart_errors_name_the_key(tmp_path: Path) -> None:
    data = yaml.safe_load((profiles.PROFILES_DIR / "kind-gpu.yaml").read_text())
    data["chart"]["worker"]["gpus"] = 0
    data["chart"]["worker"]["tolerations"] = []
    path = tmp_path / "kind-gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="num_gpus is 1 but chart.worker.gpus is 0"):
        profiles.load_file(path)
    data = yaml.safe_load((profiles.PROFILES_DIR / "eks.yaml").read_text())
    data["chart"]["model_cache"] = {"kind": "pvc", "storage_class": "gp3"}
    path = tmp_path / "eks.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r"eks.yaml: chart: .*ReadWriteOnce claim attaches to one node"):
        profiles.load_file(path)
    data["chart"]["model_cache"] = {"kind": "ephemeral"}
    data["chart"]["image"]["tag"] = "latest"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r"chart.image.tag: .*pinned"):
        profiles.load_file(path)


def test_render_command_writes_manifests_and_releases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--profile", "kind-gpu", "--output", str(tmp_path)]) == 0
    written = {Path(line).name for line in capsys.readouterr().out.split()}
    assert written == {
        "rayservice.yaml",
        "ingress.yaml",
        "networkpolicy.yaml",
        "model-cache.yaml",
        "releases.yaml",
    }
    (rs,) = yaml.safe_load_all((tmp_path / "rayservice.yaml").read_text())
    assert rs["kind"] == "RayService" and rs["apiVersion"] == "ray.io/v1"
    releases = yaml.safe_load((tmp_path / "releases.yaml").read_text())
    assert {"name", "namespace", "chart", "repo", "version", "values"} == set(releases[0])
    kuberay = [r for r in releases if r["chart"] == "kuberay-operator"]
    assert [r["version"] for r in kuberay] == [KUBERAY_VERSION]


def test_render_over_another_profile_leaves_no_stale_manifest(tmp_path: Path) -> None:
    chart.render(profiles.load("kind-cpu"), tmp_path)
    assert (tmp_path / "model-cache.yaml").exists()
    chart.render(profiles.load("eks"), tmp_path)  # eks has a claim per pod, no model-cache PVC object
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dashboards.yaml",  # monitoring is on in eks: the Grafana dashboards and the PodMonitor
        "ingress.yaml",
        "jupyterhub-notebook.yaml",
        "networkpolicy.yaml",
        "podmonitor.yaml",
        "rayservice.yaml",
        "workflowtemplate-finetune.yaml",
    ]


def test_render_to_stdout_is_one_stream_for_tilt(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--profile", "kind-cpu", "--stdout", "--image", "dogbooth-serve:tilt-1"]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert sorted(kinds) == ["Ingress", "NetworkPolicy", "PersistentVolumeClaim", "RayService"]


def test_ray_version_is_pinned_once_across_image_chart_and_project() -> None:
    # The image takes Ray from pyproject.toml + constraints.txt (tests/test_image_build.py): no pin of its own.
    dockerfile = (REPO_ROOT / "services" / "Dockerfile").read_text()
    assert "2.60" not in dockerfile and "rayproject/ray:" not in dockerfile
    chart_default = yaml.safe_load((chart.CHART_DIR / "values.yaml").read_text())["rayVersion"]
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert chart_default == "2.60.0" and '"ray[serve]==2.60.0"' in pyproject
    assert "ray==2.60.0" in (REPO_ROOT / "constraints.txt").read_text().splitlines()
    for name in CLUSTER_PROFILES:
        assert rendered(name).profile.chart.image.variant == ("cu126" if name in GPU_PROFILES else "cpu")  # type: ignore[union-attr]


def test_tiltfile_is_short_and_live_updates_without_a_new_cluster() -> None:
    """Tilt only wires: every name and port comes from `python -m dogbooth tilt-config` (the profile)."""
    tiltfile = (REPO_ROOT / "Tiltfile").read_text()
    assert len([line for line in tiltfile.splitlines() if line.strip()]) <= 30
    tokens = tokenize.generate_tokens(io.StringIO(tiltfile).readline)  # Starlark tokenizes as Python
    code = tokenize.untokenize(t for t in tokens if t.type != tokenize.COMMENT)
    assert "'tilt-config'" in code
    assert re.findall(r"\b(8000|8265)\b", code) == []
    # 'dogbooth' may name the Python module (`-m dogbooth`) and Tilt's UI label, never the namespace.
    assert re.findall(r"['\"]dogbooth['\"]", re.sub(r"'-m', 'dogbooth'|labels=\['dogbooth'\]", "", code)) == []
    live = [k.value for k in ast.walk(ast.parse(tiltfile)) if isinstance(k, ast.keyword) and k.arg == "live_update"]
    assert len(live) == 1
    calls = {c.func.id for c in ast.walk(live[0]) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    assert {"sync", "run"} <= calls  # sync services/, then a new code revision: no new RayCluster
