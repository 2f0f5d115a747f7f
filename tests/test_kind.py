"""The kind profiles against the upstream facts they depend on (issue 11, defects 2, 9, 15 and 16).

No kind, ctlptl or cluster is needed: each test checks what we generate against what the upstream
source says (cited next to each constant below), so a wrong pin fails here and not on a workstation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from dogbooth.core.errors import ProfileError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import TOOLS
from dogbooth.platforms import trainjob
from dogbooth.render import chart, clusterconfig, jupyterhub, releases
from dogbooth.settings import profiles
from dogbooth.settings.chart import ChartSettings, quantity
from dogbooth.settings.cluster import KindSettings
from dogbooth.settings.profiles import Profile

KIND_PROFILES = ["kind-cpu", "kind-gpu"]
DOCS = REPO_ROOT / "docs" / "kind.md"
GiB = 2**30

# kind v0.31.0's release notes list this 1.33 image among the images built for that release; ctlptl
# copies those notes into its table (tilt-dev/ctlptl pkg/cluster/admin_kind.go, "v0.31.0" -> "1.33",
# first in tag v0.8.44). kind only promises an image works with the release it was built for.
PINNED_IMAGE = "kindest/node:v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040"
IMAGE_BUILT_FOR_KIND = (0, 31)
CTLPTL_KNOWING_THAT_KIND = (0, 8, 44)  # tilt-dev/ctlptl tag v0.8.44, commit d738fc6 "add kind 0.31 support"
NODE_IMAGE = re.compile(r"^kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$")

# KubeRay v1.7.0 ray-operator/apis/ray/v1/rayservice_types.go: RayServiceUpgradeType values.
KUBERAY_UPGRADE_TYPES = {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}

# Measured on this repo's env (Ray 2.60.0, torch 2.13 CPU), see docs/kind.md "Memory": what a container
# running only these processes is charged (private pages + each shared file once).
HEAD_MEASURED = 1.36 * GiB + 0.38 * GiB  # head processes + a build task that imported torch and diffusers
WORKER_MEASURED = 1.73 * GiB  # worker processes + the replica's peak on 8 images of 512x512 (tiny model)
HEADROOM = 1.3


def _kind(name: str) -> KindSettings:
    profile = profiles.load(name)
    assert profile.cluster is not None and profile.cluster.kind is not None
    return profile.cluster.kind


def _edited(tmp_path: Path, name: str, edit: Any) -> Path:
    data = yaml.safe_load((profiles.PROFILES_DIR / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _rayservice(name: str) -> dict[str, Any]:
    rendered = chart.render_manifests(chart.chart_values(profiles.load(name)))
    return next(o for o in chart.manifests(rendered) if o["kind"] == "RayService")


# --- defect 2: the node image --------------------------------------------------------------------


@pytest.mark.parametrize("name", KIND_PROFILES)
def test_every_node_pins_a_digest_image_and_ctlptl_gets_no_kubernetes_version(name: str) -> None:
    _, cluster = clusterconfig.ctlptl_config(_kind(name))
    # With kubernetesVersion set, ctlptl looks the version up in its own table of kind releases and
    # fails ("unsupported Kind version") for any kind newer than the ctlptl build.
    assert "kubernetesVersion" not in cluster
    nodes = cluster["kindV1Alpha4Cluster"]["nodes"]
    assert nodes and all(NODE_IMAGE.match(node.get("image", "")) for node in nodes), nodes


@pytest.mark.parametrize("name", KIND_PROFILES)
def test_the_deploy_snapshot_shows_the_pinned_image(name: str) -> None:
    text = clusterconfig.SNAPSHOTS[name].read_text()
    assert "kubernetesVersion" not in text
    nodes = 2 if _kind(name).gpu else 1  # the control plane, and kind-gpu's GPU worker
    assert text.count(f"image: {_kind(name).node_image}") == nodes


def test_the_pinned_image_is_the_one_kind_published_and_the_minimums_support_it() -> None:
    assert KindSettings.model_fields["node_image"].default == PINNED_IMAGE
    assert {_kind(name).node_image for name in KIND_PROFILES} == {PINNED_IMAGE}
    assert TOOLS["kind"].minimum >= IMAGE_BUILT_FOR_KIND
    assert TOOLS["ctlptl"].minimum >= CTLPTL_KNOWING_THAT_KIND
    assert _kind("kind-cpu").kubernetes_version == "v1.33.7"


@pytest.mark.parametrize(
    "image",
    [
        "kindest/node:v1.33.7",  # a tag alone can be moved; kind's notes say to use the digest
        "kindest/node:v1.33.7@sha256:d26ef333",
        "kindest/node@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040",
        "example.com/node:v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040",
    ],
)
def test_an_unpinned_node_image_is_refused_naming_file_and_key(tmp_path: Path, image: str) -> None:
    path = _edited(tmp_path, "kind-cpu", lambda d: d["cluster"]["kind"].update(node_image=image))
    with pytest.raises(ProfileError, match=r"kind-cpu.yaml: cluster.kind.node_image: .*sha256:<64 hex"):
        profiles.load_file(path)


def test_the_old_kubernetes_version_key_is_refused(tmp_path: Path) -> None:
    path = _edited(tmp_path, "kind-cpu", lambda d: d["cluster"]["kind"].update(kubernetes_version="v1.33.1"))
    with pytest.raises(ProfileError, match=r"cluster.kind.kubernetes_version"):
        profiles.load_file(path)


def test_dry_run_prints_the_pinned_image(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dogbooth", "up", "--profile", "kind-cpu", "--dry-run"],
        cwd=REPO_ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOGBOOTH_"))}, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"image: {PINNED_IMAGE}" in out.stdout and "kubernetesVersion" not in out.stdout


def test_docs_state_the_image_and_the_minimum_versions() -> None:
    text = DOCS.read_text()
    assert PINNED_IMAGE in text
    for name in ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt"):
        want = ".".join(map(str, TOOLS[name].minimum))
        assert re.search(rf"^\| {name}\b[^|\n]*\| {re.escape(want)} ", text, re.M), f"{name} {want} not in docs"


# --- defect 16: the GPU node uses the RuntimeClass, not a default runtime -----------------------------


def test_the_gpu_node_script_keeps_runc_as_containerds_default() -> None:
    script = clusterconfig.GPU_NODE_SCRIPT.read_text()
    configure = [line for line in script.splitlines() if "runtime configure --runtime=containerd" in line]
    assert configure, "the script must still register the nvidia runtime with the node's containerd"
    assert not any("--set-as-default" in line for line in configure), configure


def _run_node_script(tmp_path: Path, containerd_config: str) -> tuple[int, list[str]]:
    """The GPU node script against stubs of the node's tools; returns its exit code and their calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(parents=True)
    (tmp_path / "dump").write_text(containerd_config)
    stubs = {
        "ls": "exit 0",  # /dev/nvidia0 is there
        "nvidia-ctk": "exit 0",
        "systemctl": "exit 0",
        "nvidia-smi": "echo 'GPU 0: stub'",
        "containerd": f'[ "$1 $2" = "config dump" ] && cat {tmp_path / "dump"}',
        # On a GPU host the script's ModifyDeviceFiles step would remount /proc/driver/nvidia: stub it.
        **dict.fromkeys(("umount", "mount", "cp", "sed"), "exit 0"),
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = clusterconfig.GPU_NODE_SCRIPT
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, [c for c in calls if c.split()[0] in ("nvidia-ctk", "systemctl")]


RUNC_DEFAULT = '[plugins."io.containerd.grpc.v1.cri".containerd]\n  default_runtime_name = "runc"\n'


def test_the_gpu_node_script_registers_nvidia_beside_runc_once(tmp_path: Path) -> None:
    code, calls = _run_node_script(tmp_path / "fresh", RUNC_DEFAULT)
    assert code == 0
    assert calls == [
        "nvidia-ctk runtime configure --runtime=containerd --config-source=file",
        "systemctl restart containerd",
    ]
    nvidia = RUNC_DEFAULT + '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
    code, calls = _run_node_script(tmp_path / "again", nvidia)
    assert code == 0 and calls == [], calls


def test_the_gpu_node_script_refuses_a_node_where_nvidia_is_the_default(tmp_path: Path) -> None:
    code, calls = _run_node_script(tmp_path, "  default_runtime_name = 'nvidia'\n")
    assert code == 4 and calls == []


def test_gpu_workers_run_under_the_nvidia_runtimeclass_and_nothing_else_does() -> None:
    runtime_class = yaml.safe_load(clusterconfig.NVIDIA_RUNTIME_CLASS.read_text())
    plugin = next(r for r in releases.releases_for(profiles.load("kind-gpu")) if r.name == "nvidia-device-plugin")
    assert runtime_class["metadata"]["name"] == plugin.values["runtimeClassName"] == "nvidia"
    for name in ("kind-cpu", "kind-gpu", "eks"):
        cluster = _rayservice(name)["spec"]["rayClusterConfig"]
        worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
        wants_gpu = "nvidia.com/gpu" in worker["containers"][0]["resources"]["limits"]
        # kind-gpu only: on EKS the GPU AMI's containerd already defaults to the nvidia runtime.
        expected = "nvidia" if name == "kind-gpu" else None
        assert wants_gpu == (name != "kind-cpu")
        assert worker.get("runtimeClassName") == expected, name
        assert "runtimeClassName" not in cluster["headGroupSpec"]["template"]["spec"], name


# --- defect 9: what a rebuild does, and the memory it needs -----------------------------------------


@pytest.mark.parametrize(("name", "strategy"), [("kind-cpu", "None"), ("kind-gpu", "None"), ("eks", "NewCluster")])
def test_each_profile_chooses_what_a_new_image_does(name: str, strategy: str) -> None:
    assert chart.chart_values(profiles.load(name))["upgradeStrategy"] == strategy
    assert _rayservice(name)["spec"]["upgradeStrategy"] == {"type": strategy}


def test_the_strategies_we_offer_are_ones_kuberay_accepts(tmp_path: Path) -> None:
    offered = set(get_args(ChartSettings.model_fields["upgrade_strategy"].annotation))
    assert offered <= KUBERAY_UPGRADE_TYPES
    path = _edited(tmp_path, "kind-cpu", lambda d: d["chart"].update(upgrade_strategy="Recreate"))
    with pytest.raises(ProfileError, match=r"kind-cpu.yaml: chart.upgrade_strategy"):
        profiles.load_file(path)


@pytest.mark.parametrize("name", KIND_PROFILES)
def test_the_kind_profiles_fit_their_memory_budget_during_a_rebuild_too(name: str) -> None:
    profile = profiles.load(name)
    plan = clusterconfig.memory_plan(profile)
    c, kind = profile.chart, _kind(name)
    assert c is not None
    one = quantity(c.head.resources.limits.memory) + c.worker.max_replicas * quantity(c.worker.resources.limits.memory)
    assert plan.per_cluster == one
    assert plan.clusters_during_rebuild == (2 if c.upgrade_strategy == "NewCluster" else 1)
    assert plan.peak == quantity(kind.system_reserve) + plan.clusters_during_rebuild * one
    assert plan.peak <= quantity(kind.memory_budget), plan
    clusterconfig.check_memory_budget(profile)


def test_a_second_cluster_on_an_8gib_docker_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    path = _edited(tmp_path, "kind-cpu", lambda d: d["chart"].update(upgrade_strategy="NewCluster"))
    with pytest.raises(ProfileError, match=r"kind-cpu.yaml: cluster.kind.memory_budget: .*2 RayClusters"):
        clusterconfig.check_memory_budget(profiles.load_file(path))


# --- defect 15: the head holds Ray, Serve and the build task --------------------------------------


@pytest.mark.parametrize("name", KIND_PROFILES)
def test_kind_heads_and_workers_hold_what_was_measured_with_headroom(name: str) -> None:
    c = profiles.load(name).chart
    assert c is not None
    assert quantity(c.head.resources.limits.memory) >= HEADROOM * HEAD_MEASURED
    assert quantity(c.head.resources.requests.memory) == quantity(c.head.resources.limits.memory)
    assert quantity(c.worker.resources.limits.memory) >= HEADROOM * WORKER_MEASURED


def _gpu_pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod specs (or Argo podSpecPatch) of every rendered object that asks for nvidia.com/gpu."""
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        if obj["kind"] == "Job":
            found["training Job"] = obj["spec"]["template"]["spec"]
        if obj["kind"] == "WorkflowTemplate":
            for template in obj["spec"]["templates"]:
                limits = (template.get("container") or {}).get("resources", {}).get("limits", {})
                if "nvidia.com/gpu" in limits:
                    found[f"argo {template['name']}"] = json.loads(template.get("podSpecPatch", "{}"))
    return found


@pytest.mark.parametrize(("name", "runtime_class"), [("kind-gpu", "nvidia"), ("eks", None)])
def test_every_gpu_pod_runs_under_the_profiles_runtimeclass(name: str, runtime_class: str | None) -> None:
    profile = profiles.load(name)
    data = profile.model_dump()
    data["cluster"]["addons"]["argo_workflows"] = True
    profile = Profile.model_validate(data)
    objects = chart.manifests(chart.render_manifests(chart.chart_values(profile)))
    objects += trainjob.render_job(profile, trainjob.JobRequest(run_name="t"))
    pods = _gpu_pods(objects)
    assert set(pods) == {"training Job", "argo train", "argo validate"}
    assert {where: spec.get("runtimeClassName") for where, spec in pods.items()} == dict.fromkeys(pods, runtime_class)
    hub = profile.cluster.addons.jupyterhub  # type: ignore[union-attr]
    if hub is not None and hub.enabled and hub.gpu:
        (server,) = jupyterhub.values(profile)["singleuser"]["profileList"]
        extra = server["kubespawner_override"].get("extra_pod_config", {})
        assert extra.get("runtimeClassName") == runtime_class


def test_the_training_job_takes_the_no_prior_preservation_switch() -> None:
    request = trainjob.JobRequest(run_name="t", flags={"prior_enabled": False, "seed": 3})
    (job,) = [o for o in trainjob.render_job(profiles.load("kind-gpu"), request) if o["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    argv = [*container.get("command", []), *container.get("args", [])]
    assert "--no-prior-preservation" in argv and "--seed=3" in argv
    assert not any(a.startswith("--prior-enabled") for a in argv)  # not a --key=value flag of training/cli.py
