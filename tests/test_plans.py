"""Cluster plans without a cluster: order, content of the generated configs, dry runs, tool errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from faketools import NEW_ENOUGH

from dogbooth.core.errors import BringUpError, ProfileError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import Runner
from dogbooth.platforms import dispatch, eks, kube, kubesteps, plan
from dogbooth.render import clusterconfig, eksctl, releases
from dogbooth.settings import profiles
from dogbooth.settings.cluster import EksSettings, eks_target

CLUSTER_PROFILES = ["kind-cpu", "kind-gpu", "eks"]
UP_ORDER = ["cluster", "operator", "ingress", "app"]
# eks has no ingress release: the AWS Load Balancer Controller (platform) serves the chart's Ingress.
EKS_UP_ORDER = ["cluster", "platform", "operator", "app"]


def _index(p: plan.Plan, phase: str) -> int:
    return p.phases().index(phase)


def _titles(p: plan.Plan) -> list[str]:
    return [s.title for s in p.steps]


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "DOGBOOTH_EKS_REGION", "DOGBOOTH_EKS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_up_is_cluster_then_operator_then_ingress_then_app(name: str) -> None:
    p = dispatch.build_plan("up", profiles.load(name))
    indices = [_index(p, phase) for phase in (EKS_UP_ORDER if name == "eks" else UP_ORDER)]
    assert indices == sorted(indices), p.phases()
    last_install = max(i for i, s in enumerate(p.steps) if s.phase == "app")
    assert all(s.phase == "wait" for s in p.steps[last_install + 1 :])
    assert p.phases()[-2:] == ["wait", "wait"]
    # every add-on release is in the plan, before the app
    assert [s.title.split()[2] for s in p.steps if s.title.startswith("helm install")] == [
        *[r.name for r in releases.releases_for(profiles.load(name))],
        "dogbooth",
    ]


@pytest.mark.parametrize("name", ["kind-cpu", "kind-gpu"])
def test_dev_ends_in_tilt_after_the_addons(name: str) -> None:
    p = dispatch.build_plan("dev", profiles.load(name))
    assert p.phases()[0] == "cluster" and p.phases()[-1] == "app"
    assert _index(p, "operator") < _index(p, "ingress") < len(p.steps) - 1
    assert "tilt up --file Tiltfile --context kind-" in p.steps[-1].detail[0]


def test_eks_down_is_the_reverse_with_the_load_balancer_wait_before_deletion() -> None:
    p = dispatch.build_plan("down", profiles.load("eks"))
    phases = p.phases()
    assert phases.index("app") < phases.index("lb-wait") < phases.index("nodes") < phases.index("volumes-wait")
    assert p.steps[-1].phase == "cluster" and "eksctl delete cluster" in p.steps[-1].detail[0]
    assert [t for t in _titles(p) if t.startswith("helm uninstall")] == [
        "helm uninstall dogbooth",  # its Ingress owns the ALB
        "helm uninstall jupyterhub",  # its proxy-public Service is an NLB
    ]
    # The controller that deletes the NLB is never uninstalled before it has done so.
    assert not any("aws-load-balancer-controller" in t for t in _titles(p))
    # Idempotent: everything touching the cluster is gated on it existing, the AWS-side LB check is not.
    gated = {s.title: s.only_if for s in p.steps}
    assert all(v == "cluster_exists" for t, v in gated.items() if t.startswith(("helm", "delete the cluster")))
    assert gated["wait until AWS has deleted the load balancers (runs even if the cluster is gone)"] is None


def test_kind_down_uninstalls_the_app_then_deletes_the_cluster() -> None:
    p = dispatch.build_plan("down", profiles.load("kind-cpu"))
    assert p.phases() == ["cluster", "app", "cluster"]
    assert p.steps[-1].detail[0] == "$ ctlptl delete cluster kind-dogbooth --ignore-not-found"


def test_eks_up_builds_and_pushes_to_ecr_before_the_chart() -> None:
    p = dispatch.build_plan("up", profiles.load("eks"))
    text = p.describe()
    for fragment in (
        "eksctl create cluster --install-nvidia-plugin=false --write-kubeconfig=false "
        "--set-kubeconfig-context=false -f -",
        "aws ecr create-repository",
        "docker push",
        "--platform linux/amd64",
        "helm install-or-upgrade kuberay-operator",
        f"version: {releases.KUBERAY_VERSION}",
        "ingressClass: alb",
        "storageclass-gp3.yaml",
    ):
        assert fragment in text, fragment
    assert _index(p, "cluster") < _index(p, "image") < _index(p, "platform") < _index(p, "operator")
    app_values = next(s for s in p.steps if s.title.startswith("helm install-or-upgrade dogbooth")).detail[2]
    assert ".dkr.ecr.us-west-2.amazonaws.com/dogbooth/serve" in app_values


def test_releases_per_profile() -> None:
    names = {n: {r.name: r for r in releases.releases_for(profiles.load(n))} for n in CLUSTER_PROFILES}
    assert all(names[n]["kuberay-operator"].version == releases.KUBERAY_VERSION for n in CLUSTER_PROFILES)
    assert "nvidia-device-plugin" not in names["kind-cpu"]
    assert names["kind-gpu"]["nvidia-device-plugin"].values["gfd"] == {"enabled": True}
    assert names["kind-gpu"]["nvidia-device-plugin"].values["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in names["eks"]["nvidia-device-plugin"].values
    assert "aws-load-balancer-controller" in names["eks"] and "aws-load-balancer-controller" not in names["kind-cpu"]
    owners = [r.name for r in releases.releases_for(profiles.load("eks")) if r.owns_load_balancer]
    assert owners == ["jupyterhub"]  # the app's ALB belongs to our chart's Ingress, uninstalled first
    assert releases.releases_for(profiles.load("local")) == []
    for release in names["eks"].values():
        assert set(release.to_dict()) == {"name", "namespace", "chart", "repo", "version", "values"}
        assert release.version and release.repo.startswith("https://")


def test_monitoring_flag_adds_kube_prometheus_stack_before_the_operator() -> None:
    base = profiles.load("kind-cpu")
    data = base.model_dump()
    data["cluster"]["addons"]["monitoring"] = True
    rel = releases.releases_for(profiles.Profile.model_validate(data))
    assert [r.name for r in rel] == ["kube-prometheus-stack", "kuberay-operator", "ingress-nginx"]
    assert rel[1].values["metrics"]["serviceMonitor"]["enabled"] is True


@pytest.mark.parametrize("name", ["kind-cpu", "kind-gpu"])
def test_kind_ports_match_the_ingress_host_ports(name: str) -> None:
    profile = profiles.load(name)
    assert profile.cluster is not None and profile.cluster.kind is not None
    registry, kind_cluster = clusterconfig.ctlptl_config(profile.cluster.kind)
    assert registry["kind"] == "Registry" and kind_cluster["registry"] == registry["name"]
    control_plane = kind_cluster["kindV1Alpha4Cluster"]["nodes"][0]
    mapped = {m["containerPort"]: m["hostPort"] for m in control_plane["extraPortMappings"]}
    ingress = next(r for r in releases.releases_for(profile) if r.name == "ingress-nginx").values["controller"]
    assert set(mapped) == set(ingress["hostPort"]["ports"].values()) == {80, 443}
    assert mapped[80] == profile.cluster.kind.ingress_http_port
    assert control_plane["labels"].items() >= ingress["nodeSelector"].items() - {("kubernetes.io/os", "linux")}
    workers = kind_cluster["kindV1Alpha4Cluster"]["nodes"][1:]
    if profile.cluster.kind.gpu:
        assert workers[0]["extraMounts"] == [
            {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}
        ]
        assert "nvidia-ctk runtime configure --runtime=containerd" in clusterconfig.GPU_NODE_SCRIPT.read_text()
        assert "nvidia-runtimeclass.yaml" in dispatch.build_plan("up", profile).describe()
    else:
        assert workers == []


def test_eksctl_config_gpu_nodegroup() -> None:
    settings = EksSettings(region="eu-west-1")
    config = eksctl.eksctl_config(settings, eks_target(settings, env={}))
    assert config["metadata"] == {
        "name": "dogbooth",
        "region": "eu-west-1",
        "version": "1.35",
        "tags": {"app.kubernetes.io/part-of": "dogbooth", "karpenter.sh/discovery": "dogbooth"},
    }
    (system,) = config["managedNodeGroups"]  # GPU nodes come from Karpenter (tests/test_eks.py)
    assert "taints" not in system and system["instanceType"] == "m6i.xlarge"
    fixed = settings.model_copy(update={"karpenter": settings.karpenter.model_copy(update={"enabled": False})})
    _, gpu = eksctl.eksctl_config(fixed, eks_target(fixed, env={}))["managedNodeGroups"]
    assert gpu["instanceType"] == "g5.xlarge" and gpu["amiFamily"] == "AmazonLinux2023"
    assert gpu["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert {a["name"] for a in config["addons"]} == {"vpc-cni", "aws-ebs-csi-driver", "eks-pod-identity-agent"}
    association = config["iam"]["podIdentityAssociations"][0]
    assert association["wellKnownPolicies"] == {"awsLoadBalancerController": True}
    irsa = eksctl.eksctl_config(settings.model_copy(update={"lb_controller_iam": "irsa"}), eks_target(settings, env={}))
    assert irsa["iam"]["withOIDC"] is True and "podIdentityAssociations" not in irsa["iam"]


def test_eks_name_and_region_from_profile_or_environment() -> None:
    settings = EksSettings(region="us-west-2")
    assert eks_target(settings, env={}).region == "us-west-2"
    assert (
        eks_target(settings, env={"DOGBOOTH_EKS_REGION": "us-east-1", "AWS_REGION": "eu-west-1"}).region == "us-east-1"
    )
    assert eks_target(EksSettings(), env={"AWS_REGION": "eu-west-1"}).region == "eu-west-1"
    assert eks_target(settings, env={"DOGBOOTH_EKS_CLUSTER": "mine"}).name == "mine"
    with pytest.raises(ProfileError, match="cluster.eks.region"):
        eks_target(EksSettings(), env={})


def test_profile_cluster_section_must_fit_the_platform(tmp_path: Path) -> None:
    path = tmp_path / "kind-cpu.yaml"
    text = (profiles.PROFILES_DIR / "kind-cpu.yaml").read_text()
    path.write_text(text.replace("    gpu: false\n", "    gpu: false\n  eks: {region: us-west-2}\n"))
    with pytest.raises(ProfileError, match="cannot also have a cluster.eks"):
        profiles.load_file(path)
    path.write_text(text.replace("registry_port: 5005", "registry_port: 80"))
    with pytest.raises(ProfileError, match=r"kind-cpu.yaml: cluster.kind.registry_port"):
        profiles.load_file(path)


@pytest.mark.parametrize("name", sorted(clusterconfig.SNAPSHOTS))
def test_deploy_snapshots_are_current(name: str) -> None:
    assert clusterconfig.SNAPSHOTS[name].read_text() == clusterconfig.snapshot(name), (
        "deploy/ is stale: run python -m dogbooth.render.clusterconfig"
    )


def _run_cli(*args: str, env_path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("DOGBOOTH_EKS")}
    env["PATH"] = env_path
    return subprocess.run(
        [sys.executable, "-m", "dogbooth", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_runs_need_no_tools_and_no_credentials(tmp_path: Path) -> None:
    cloud = _run_cli("cloud", "--dry-run", env_path=str(tmp_path))
    assert cloud.returncode == 0, cloud.stderr
    assert "eksctl create cluster" in cloud.stdout and "aws ecr" in cloud.stdout and "kuberay-operator" in cloud.stdout
    down = _run_cli("down", "--profile", "eks", "--dry-run", env_path=str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert (
        down.stdout.index("helm uninstall dogbooth")
        < down.stdout.index("[lb-wait]")
        < down.stdout.index("eksctl delete cluster")
    )


def test_dev_without_tools_prints_one_error_naming_them_all(tmp_path: Path) -> None:
    result = _run_cli("dev", "--profile", "kind-cpu", env_path=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("error:") == 1
    for tool in ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt"):
        assert f"  - {tool}: not found on PATH; install: https://" in result.stderr, tool


def test_plan_execution_substitutes_captured_values_and_honours_gates(tmp_path: Path) -> None:
    out = tmp_path / "out"
    steps = (
        plan.command("cluster", "look up", ["sh", "-c", "echo 123456789012"], capture="account"),
        plan.command("image", "use it", ["sh", "-c", f'echo "$0" > {out}', "${account}.dkr.ecr"]),
        plan.command("image", "gated", ["sh", "-c", "exit 9"], only_if="image_missing"),
    )
    ctx = plan.Context(profiles.load("eks"), kubesteps.kube_target(profiles.load("eks")), runner=Runner())
    plan.Plan("t", "eks", steps).execute(ctx)
    assert out.read_text() == "123456789012.dkr.ecr\n"
    assert ctx.resolve({"vpcId": ["${account}"]}) == {"vpcId": ["123456789012"]}


def _pod(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_diagnose_names_what_is_stuck() -> None:
    pending = _pod(
        "w-gpu",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    )
    pulling = _pod(
        "head",
        {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "ray-head",
                    "image": "x:1",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
                }
            ],
        },
    )
    service = {
        "status": {
            "activeServiceStatus": {
                "applicationStatuses": {
                    "dogbooth": {
                        "status": "DEPLOY_FAILED",
                        "message": "ImportError: no module named services",
                    }
                }
            }
        }
    }
    text = kube.diagnose([pending, pulling], service)
    assert "no node with a free GPU" in text
    assert "cannot pull image x:1: not found" in text
    assert "Serve application dogbooth is DEPLOY_FAILED: ImportError" in text
    assert "does not exist" in kube.diagnose([], None)
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert kube.is_ready(ready) and not kube.is_ready(service)
    assert kube.ingress_address([{"status": {"loadBalancer": {"ingress": [{"hostname": "k8s-x.elb"}]}}}]) == "k8s-x.elb"


def test_eks_plans_touch_nothing_while_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    for tool in ("aws", "eksctl", "kubectl", "helm", "docker"):  # each notes any call to it
        (tmp_path / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    up, down = eks.up(profiles.load("eks")), eks.down(profiles.load("eks"))
    assert not calls.exists(), calls.read_text()
    assert up.phases()[0] == "cluster" and "eksctl create cluster" in up.describe()
    titles = _titles(down)
    assert titles[0] == "does EKS cluster dogbooth exist in us-west-2?"  # the gate for every later step
    assert titles.index("helm uninstall jupyterhub") < down.phases().index("lb-wait")  # an NLB owner goes first
    assert titles[-1].startswith("delete the cluster")


def test_http_wait_retries_until_200_and_reports_the_last_answer() -> None:
    import http.server
    import threading

    answers = [503, 503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(answers.pop(0) if len(answers) > 1 else answers[0])
            self.end_headers()
            self.wfile.write(b"warming up")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
        kube.wait_http_ok(url, timeout_s=30, interval_s=0.05)
        answers[:] = [503]
        with pytest.raises(BringUpError, match="last: HTTP 503: warming up"):
            kube.wait_http_ok(url, timeout_s=0.5, interval_s=0.05)
    finally:
        server.shutdown()


def _fake_tools(bin_dir: Path, log: Path, behaviour: dict[str, str]) -> None:
    """Each tool answers its version probe and logs every other call; `behaviour` adds a shell body."""
    bin_dir.mkdir()
    for name, version in NEW_ENOUGH.items():
        body = behaviour.get(name, "")
        script = (
            f'#!/bin/sh\ncase "$*" in *version*) echo "{version}"; exit 0;; esac\necho "{name} $*" >> {log}\n{body}\n'
        )
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)


def test_kind_down_runs_for_real_and_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls"
    _fake_tools(tmp_path / "bin", log, {"kind": "exit 0"})  # `kind get clusters`: none
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for _ in range(2):
        assert dispatch.run("down", profiles.load("kind-cpu")) is None
    assert (
        log.read_text().splitlines()
        == [
            "kind get clusters",
            "ctlptl delete cluster kind-dogbooth --ignore-not-found",
        ]
        * 2
    )


def test_eks_down_when_the_cluster_is_gone_only_checks_for_stranded_load_balancers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls"
    behaviour = {
        "eksctl": 'echo "Error: No cluster found for name: dogbooth" >&2; exit 1',
        "aws": "echo '[]'",
    }
    _fake_tools(tmp_path / "bin", log, behaviour)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    dispatch.run("down", profiles.load("eks"))
    calls = log.read_text().splitlines()
    assert calls[0] == "eksctl get cluster --name dogbooth --region us-west-2 -o json"
    assert calls[1].startswith("aws resourcegroupstaggingapi get-resources --region us-west-2")
    assert "Key=elbv2.k8s.aws/cluster,Values=dogbooth" in calls[1] and len(calls) == 2


def test_eks_down_refuses_to_delete_while_load_balancers_remain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = "arn:aws:elasticloadbalancing:us-west-2:1:loadbalancer/net/k8s-ingress/abc"
    behaviour = {"eksctl": 'echo "No cluster found" >&2; exit 1', "aws": f"echo '[\"{arn}\"]'"}
    _fake_tools(tmp_path / "bin", tmp_path / "calls", behaviour)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(kubesteps, "LB_TIMEOUT_S", 0)
    monkeypatch.setattr(eks, "LB_TIMEOUT_S", 0)
    with pytest.raises(BringUpError, match="would be stranded") as info:
        dispatch.run("down", profiles.load("eks"))
    assert f"aws elbv2 delete-load-balancer --region us-west-2 --load-balancer-arn {arn}" in str(info.value)
    assert "eksctl delete" not in (tmp_path / "calls").read_text()
