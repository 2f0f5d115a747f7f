"""Issue 11 on eks: Kubernetes version, ALB ingress, enforced NetworkPolicy, a private kubeconfig,
Karpenter. Nothing here reaches AWS: plans are built, printed, or run against a recording runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from dogbooth.core.errors import CommandFailed, ProfileError
from dogbooth.core.paths import REPO_ROOT, STATE_DIR_ENV
from dogbooth.platforms import dispatch, eks, kubesteps
from dogbooth.platforms import plan as p
from dogbooth.render import chart, eksctl, k8svalidate, karpenter, releases
from dogbooth.settings import profiles
from dogbooth.settings.cluster import EKS_OLDEST_MINOR, eks_target
from dogbooth.settings.profiles import Profile


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "DOGBOOTH_EKS_REGION", "DOGBOOTH_EKS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))  # the private kubeconfig goes here


def _eks() -> Profile:
    return profiles.load("eks")


def _config(profile: Profile | None = None) -> dict[str, Any]:
    profile = profile or _eks()
    assert profile.cluster is not None and profile.cluster.eks is not None
    return eksctl.eksctl_config(profile.cluster.eks, eks_target(profile.cluster.eks, env={}))


def _edited(tmp_path: Path, pattern: str, new: str) -> Path:
    """profiles/eks.yaml with the one match of `pattern` replaced, under its own name (a profile's name
    is its file's)."""
    text, count = re.subn(pattern, new, (profiles.PROFILES_DIR / "eks.yaml").read_text())
    assert count == 1, pattern
    path = tmp_path / "eks.yaml"
    path.write_text(text)
    return path


def _changed(change: dict[str, Any]) -> dict[str, Any]:
    """The eks profile's data with dotted keys set, ready for Profile.model_validate."""
    data = _eks().model_dump()
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def _private_kubeconfig() -> str:
    return str(kubesteps.kube_target(_eks()).kubeconfig)


class RecordingRunner:
    """Stands in for core.tools.Runner: notes each argv with its extra environment, answers "" ."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, **_: Any) -> str:
        self.calls.append(([str(a) for a in argv], dict(env or {})))
        return ""


def _run_tool_steps(plan: p.Plan) -> RecordingRunner:
    """Run every step that only calls eksctl or kubectl (their actions go through ctx.runner)."""
    runner = RecordingRunner()
    ctx = p.Context(_eks(), kubesteps.kube_target(_eks()), runner=runner)  # type: ignore[arg-type]
    ctx.values.update(account="123456789012", vpc_id="vpc-1", ecr_password="x")
    for step in plan.steps:
        if step.detail and re.match(r"\$ (KUBECONFIG=\S+ )?(eksctl|kubectl) ", step.detail[0]):
            step.action(ctx)
    return runner


# --- 6. Kubernetes version: in standard support, AL2023 and the NVIDIA AMI for GPU nodes ---------------


def test_eks_runs_a_kubernetes_version_in_standard_support() -> None:
    version = _config()["metadata"]["version"]
    assert version == "1.35"  # the newest minor eksctl 0.230 names (docs/eks.md)
    assert int(version.split(".")[1]) >= EKS_OLDEST_MINOR == 34
    assert "version: '1.35'" in (REPO_ROOT / "deploy" / "eks" / "eksctl-eks.yaml").read_text()


@pytest.mark.parametrize("old", ["1.33", "1.30"])
def test_a_version_past_standard_support_is_refused_naming_the_key(tmp_path: Path, old: str) -> None:
    version = r'kubernetes_version: "1\.\d+"'
    with pytest.raises(ProfileError, match=r"eks\.yaml: cluster\.eks\.kubernetes_version: .*past EKS standard support"):
        profiles.load_file(_edited(tmp_path, version, f'kubernetes_version: "{old}"'))
    newest_refused = profiles.load_file(_edited(tmp_path, version, 'kubernetes_version: "1.34"'))
    assert newest_refused.cluster.eks.kubernetes_version == "1.34"  # type: ignore[union-attr]


def test_gpu_nodes_run_al2023_and_its_nvidia_variant() -> None:
    profile = _eks()
    objects = {
        (o["kind"], o["metadata"]["name"]): o
        for o in karpenter.objects(profile, eks_target(profile.cluster.eks, env={}))
    }  # type: ignore[union-attr]
    # Karpenter's al2023 alias resolves the NVIDIA AMI for GPU instance types (amifamily/al2023.go).
    assert objects[("EC2NodeClass", "gpu")]["spec"]["amiSelectorTerms"] == [{"alias": "al2023@latest"}]
    (types,) = [r["values"] for r in objects[("NodePool", "gpu")]["spec"]["template"]["spec"]["requirements"]
                if r["key"] == "node.kubernetes.io/instance-type"]  # fmt: skip
    assert types == ["g5.xlarge", "g6.xlarge"]
    # The fallback managed nodegroup (Karpenter off) is AL2023 too; eksctl picks its NVIDIA variant.
    fixed = _changed({"cluster.eks.karpenter.enabled": False})
    _, gpu = _config(Profile.model_validate(fixed))["managedNodeGroups"]
    assert gpu["amiFamily"] == "AmazonLinux2023" and gpu["instanceType"] == "g5.xlarge"


# --- 7. Ingress: an internal ALB on eks, ingress-nginx 4.15.1 on kind only, KubeRay 1.7.1 -------------------


def test_releases_drop_ingress_nginx_on_eks_and_pin_the_fixed_versions() -> None:
    on_eks = {r.name: r for r in releases.releases_for(_eks())}
    assert "ingress-nginx" not in on_eks
    assert on_eks["aws-load-balancer-controller"].values["ingressClass"] == "alb"
    for name in ("kind-cpu", "kind-gpu"):
        nginx = {r.name: r for r in releases.releases_for(profiles.load(name))}["ingress-nginx"]
        assert nginx.version == "4.15.1"
    for name in ("kind-cpu", "kind-gpu", "eks"):
        kuberay = {r.name: r for r in releases.releases_for(profiles.load(name))}["kuberay-operator"]
        assert (kuberay.version, kuberay.values["image"]["tag"]) == ("1.7.1", "v1.7.1")


def _ingress(profile: Profile) -> dict[str, Any]:
    values = chart.chart_values(profile)
    (ingress,) = [o for o in chart.manifests(chart.render_manifests(values)) if o["kind"] == "Ingress"]
    k8svalidate.validate_k8s(ingress)
    return ingress


def test_eks_ingress_is_an_internal_alb_that_strips_the_prefix() -> None:
    ingress = _ingress(_eks())
    notes = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert notes["alb.ingress.kubernetes.io/scheme"] == "internal"
    assert notes["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert notes["alb.ingress.kubernetes.io/load-balancer-attributes"] == "idle_timeout.timeout_seconds=125"
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/dogbooth/serve/", "Prefix")
    service = path["backend"]["service"]["name"]
    (rewrite,) = json.loads(notes[f"alb.ingress.kubernetes.io/transforms.{service}"])
    assert rewrite == {
        "type": "url-rewrite",
        "urlRewriteConfig": {"rewrites": [{"regex": "^/dogbooth/serve/(.*)$", "replace": "/$1"}]},
    }
    regex, replace = rewrite["urlRewriteConfig"]["rewrites"][0].values()
    assert re.sub(regex, replace.replace("$1", r"\1"), "/dogbooth/serve/imagine") == "/imagine"


def test_ingress_internal_false_makes_the_alb_internet_facing(tmp_path: Path) -> None:
    path = _edited(tmp_path, r"ingress_internal: true\b", "ingress_internal: false")
    notes = _ingress(profiles.load_file(path))["metadata"]["annotations"]
    assert notes["alb.ingress.kubernetes.io/scheme"] == "internet-facing"


def test_an_eks_ingress_class_other_than_alb_is_refused() -> None:
    profile = Profile.model_validate(_changed({"chart.ingress.class_name": "nginx"}))
    with pytest.raises(ProfileError, match=r"eks\.yaml: chart\.ingress\.class_name: must be alb on eks"):
        chart.chart_values(profile)


def test_down_deletes_the_alb_before_the_cluster() -> None:
    plan = dispatch.build_plan("down", _eks())
    titles = [s.title for s in plan.steps]
    app = titles.index("helm uninstall dogbooth")  # its Ingress, and the controller's finalizer with it
    aws_wait = next(i for i, s in enumerate(plan.steps) if s.phase == "lb-wait" and s.only_if is None)
    assert app < aws_wait < len(titles) - 1 and titles[-1].startswith("delete the cluster")
    # The Load Balancer Controller tags every ALB and NLB it makes with elbv2.k8s.aws/cluster.
    assert kubesteps.LB_TAG == "elbv2.k8s.aws/cluster"
    assert "Key=elbv2.k8s.aws/cluster,Values=dogbooth" in plan.steps[aws_wait].detail[0]
    assert not any("aws-load-balancer-controller" in t for t in titles)  # it must live to delete the ALB


# --- 10. NetworkPolicy enforced: the VPC CNI's policy agent on -----------------------------------------


def test_vpc_cni_turns_its_network_policy_agent_on() -> None:
    (cni,) = [a for a in _config()["addons"] if a["name"] == "vpc-cni"]
    assert json.loads(cni["configurationValues"]) == {"enableNetworkPolicy": "true"}
    assert cni["resolveConflicts"] == "OVERWRITE"  # `eksctl update addon` applies it to an older cluster
    snapshot = yaml.safe_load((REPO_ROOT / "deploy" / "eks" / "eksctl-eks.yaml").read_text())
    assert cni in snapshot["addons"]


# --- 11. ~/.kube/config left alone -----------------------------------------------------------------------------


def test_create_cluster_writes_no_kubeconfig_and_eksctl_sees_only_ours() -> None:
    private = _private_kubeconfig()
    assert not private.startswith(str(Path.home() / ".kube"))
    calls = _run_tool_steps(eks.up(_eks())).calls + _run_tool_steps(eks.down(_eks())).calls
    eksctl_calls = [(argv, env) for argv, env in calls if argv[0] == "eksctl"]
    verbs = {" ".join(argv[1:3]) for argv, _ in eksctl_calls}
    assert {"create cluster", "upgrade cluster", "create nodegroup", "update addon", "delete cluster"} <= verbs
    for argv, env in eksctl_calls:
        if argv[1:3] == ["create", "cluster"]:
            assert {"--write-kubeconfig=false", "--set-kubeconfig-context=false"} <= set(argv)
        if argv[1] != "get":  # every eksctl verb that could edit $KUBECONFIG gets ours
            assert env.get("KUBECONFIG") == private or ["--kubeconfig", private] == argv[-2:], argv
    kubectl_calls = [argv for argv, _ in calls if argv[0] == "kubectl"]
    assert kubectl_calls and all(argv[1:3] == ["--kubeconfig", private] for argv in kubectl_calls)


def test_helm_and_the_kubernetes_client_use_the_private_kubeconfig() -> None:
    target = kubesteps.kube_target(_eks())
    assert str(target.kubeconfig) == _private_kubeconfig() and target.context is None
    assert target.kubectl_args() == ["--kubeconfig", _private_kubeconfig()]


# --- 12. Karpenter: GPU and CPU NodePools, one setting for the GPU count ------------------------------------


def _objects(profile: Profile | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    profile = profile or _eks()
    target = eks_target(profile.cluster.eks, env={})  # type: ignore[union-attr]
    return {(o["kind"], o["metadata"]["name"]): o for o in karpenter.objects(profile, target)}


def test_eksctl_installs_karpenter_with_its_iam_and_interruption_queue() -> None:
    config = _config()
    assert config["karpenter"] == {"version": "1.14.1", "withSpotInterruptionQueue": True}
    assert config["iam"]["withOIDC"] is True  # eksctl's Karpenter role is IRSA
    assert config["metadata"]["tags"]["karpenter.sh/discovery"] == "dogbooth"
    assert [g["name"] for g in config["managedNodeGroups"]] == ["system"]  # GPU nodes: Karpenter's


def test_karpenter_objects_match_the_pinned_crds() -> None:
    base = k8svalidate.schema_dir()
    if base is None or not (base / karpenter.NODEPOOL_CRD).is_file():
        pytest.skip(f"no pinned Karpenter CRDs (set {k8svalidate.SCHEMA_DIR_ENV})")
    objects = _objects()
    assert set(objects) == {("EC2NodeClass", "gpu"), ("EC2NodeClass", "cpu"), ("NodePool", "gpu"), ("NodePool", "cpu")}
    for (kind, _), obj in objects.items():
        crd = karpenter.NODEPOOL_CRD if kind == "NodePool" else karpenter.NODECLASS_CRD
        k8svalidate.validate_against_crd(obj, base / crd)
    for name in ("gpu", "cpu"):  # CEL rules the JSON schema cannot check
        spec = objects[("EC2NodeClass", name)]["spec"]
        assert ("role" in spec) != ("instanceProfile" in spec)
        assert spec["instanceProfile"] == "eksctl-KarpenterNodeInstanceProfile-dogbooth"  # what eksctl makes
        assert objects[("NodePool", name)]["spec"]["template"]["spec"]["nodeClassRef"]["name"] == name


def test_gpu_pool_is_tainted_and_its_limit_derives_from_the_chart() -> None:
    pool = _objects()[("NodePool", "gpu")]["spec"]
    assert pool["template"]["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert pool["template"]["metadata"]["labels"]["dogbooth.io/pool"] == "gpu"
    profile = _eks()
    worker, hub = profile.chart.worker, profile.cluster.addons.jupyterhub  # type: ignore[union-attr]
    assert (
        pool["limits"]
        == {"nvidia.com/gpu": worker.max_replicas * worker.gpus + hub.max_gpu_servers}
        == {"nvidia.com/gpu": 5}
    )
    # One setting: fewer Ray workers (Serve's ceiling follows the chart's) means a smaller GPU limit.
    data = _changed(
        {
            "chart.worker.max_replicas": 2,
            "serve.deployment.autoscaling.max_replicas": 2,
            "cluster.addons.jupyterhub.max_gpu_servers": 0,
        }
    )
    smaller = _objects(Profile.model_validate(data))[("NodePool", "gpu")]["spec"]["limits"]
    assert smaller == {"nvidia.com/gpu": 2}
    cpu = _objects()[("NodePool", "cpu")]["spec"]
    assert cpu["limits"] == {"cpu": 16} and "taints" not in cpu["template"]["spec"]
    assert cpu["template"]["metadata"]["labels"] == {"dogbooth.io/pool": "system"}  # overflow for system pods


def test_cloud_applies_the_nodepools_before_the_chart_and_down_removes_their_nodes() -> None:
    up = eks.up(_eks())
    titles = [s.title for s in up.steps]
    apply = next(i for i, t in enumerate(titles) if t.startswith("Karpenter 1.14.1: NodePool gpu"))
    assert apply < titles.index("helm install-or-upgrade dogbooth (charts/dogbooth 0.1.0)")
    applied = list(yaml.safe_load_all(up.steps[apply].detail[1]))
    assert applied == karpenter.objects(_eks(), eks_target(_eks().cluster.eks, env={}))  # type: ignore[union-attr]
    down = eks.down(_eks())
    phases = down.phases()
    assert phases.index("lb-wait") < phases.index("nodes") < len(phases) - 1


def test_down_tolerates_a_cluster_without_karpenter() -> None:
    class NoKarpenter(RecordingRunner):
        def run(self, argv: Sequence[str], **kw: Any) -> str:
            super().run(argv, **kw)
            raise CommandFailed(list(argv), 1, 'error: the server doesn\'t have a resource type "nodepools"')

    (step,) = [s for s in eks.down(_eks()).steps if s.phase == "nodes"]
    runner = NoKarpenter()
    step.action(p.Context(_eks(), kubesteps.kube_target(_eks()), runner=runner))  # type: ignore[arg-type]
    assert [argv[4] for argv, _ in runner.calls] == ["nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"]


def test_karpenter_snapshot_is_current() -> None:
    assert karpenter.SNAPSHOT.read_text() == karpenter.snapshot(), (
        "deploy/eks/karpenter-eks.yaml is stale: run python -m dogbooth.render.karpenter"
    )


# --- Done-when: what `cloud --dry-run` prints, and every profile still renders and validates ----------------


def test_cloud_dry_run_shows_every_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOGBOOTH_EKS"))}
    env["PATH"] = str(tmp_path)  # no tools, no credentials
    out = subprocess.run(
        [sys.executable, "-m", "dogbooth", "cloud", "--dry-run"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "ec2 quota gpu-g5: $ aws service-quotas get-service-quota" in out  # the quota preflight
    (minor,) = re.findall(r"^\s+version: '1\.(\d+)'$", out, re.MULTILINE)
    assert int(minor) >= 34
    assert 'configurationValues: \'{"enableNetworkPolicy": "true"}\'' in out
    assert (
        "eksctl create cluster --install-nvidia-plugin=false --write-kubeconfig=false --set-kubeconfig-context=false"
        in out
    )
    assert f"KUBECONFIG={_private_kubeconfig()} eksctl create cluster" in out
    assert "karpenter:\n        version: 1.14.1" in out and "kind: NodePool" in out
    assert "helm install-or-upgrade kuberay-operator (kuberay-operator 1.7.1)" in out
    assert "ingress-nginx" not in out  # retired upstream: none at all on eks


@pytest.mark.parametrize("name", ["eks", "kind-cpu", "kind-gpu"])
def test_render_still_passes_every_schema_check(name: str, tmp_path: Path) -> None:
    written = chart.render_all(profiles.load(name), tmp_path)  # raises on any schema failure
    assert (tmp_path / "ingress.yaml") in written
