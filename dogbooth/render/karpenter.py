"""Karpenter's NodePools and EC2NodeClasses for an eks profile: what adds nodes for pending pods.

Two pools. `gpu`: single-GPU G5/G6 nodes, tainted like the GPU nodegroup they replace, for the Ray
GPU workers and the JupyterHub GPU servers; its `nvidia.com/gpu` limit is `gpu_pool_size`, i.e.
chart.worker.max_replicas x chart.worker.gpus plus cluster.addons.jupyterhub.max_gpu_servers, so
the Ray autoscaler's ceiling and the node ceiling come from one setting. `cpu`: overflow for the
system pods (labelled like the system nodegroup) once that nodegroup is full.

eksctl installs Karpenter with the cluster (render/eksctl.py); `nox -s cloud` applies these objects
with kubectl (platforms/eks.py). deploy/eks/karpenter-eks.yaml is a snapshot, kept current by
tests/test_eks.py; regenerate with `python -m dogbooth.render.karpenter`.
"""

from __future__ import annotations

from typing import Any

from dogbooth.core.errors import ProfileError
from dogbooth.core.names import GPU_NODE_LABEL
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.yamlfile import dump_all
from dogbooth.render.eksctl import DISCOVERY_TAG, POOL_LABEL
from dogbooth.settings import profiles
from dogbooth.settings.cluster import EksSettings, EksTarget, eks_target, gpu_pool_size
from dogbooth.settings.profiles import Profile, eks_settings

SNAPSHOT = REPO_ROOT / "deploy" / "eks" / "karpenter-eks.yaml"
NODEPOOL_CRD = "karpenter-crds/karpenter.sh_nodepools.yaml"  # under k8svalidate.schema_dir()
NODECLASS_CRD = "karpenter-crds/karpenter.k8s.aws_ec2nodeclasses.yaml"
_PART_OF = {"app.kubernetes.io/part-of": "dogbooth"}
# Karpenter replaces at most one node of a pool at a time (drift to a new AMI, expiry): a Serve
# replica or the Ray head restarts one by one, never all at once.
_BUDGETS = [{"nodes": "1"}]
# Only empty nodes go: repacking would evict Ray pods, and a moved head restarts the whole RayCluster.
_DISRUPTION = {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m", "budgets": _BUDGETS}


def instance_profile(target: EksTarget) -> str:
    """The instance profile eksctl's `karpenter:` section makes for Karpenter's nodes."""
    return f"eksctl-KarpenterNodeInstanceProfile-{target.name}"


def _discovery(target: EksTarget) -> list[dict[str, Any]]:
    """What eksctl tags the private subnets and node security groups with (render/eksctl.py)."""
    return [{"tags": {DISCOVERY_TAG: target.name}}]


def _node_class(name: str, eks: EksSettings, target: EksTarget, volume_gb: int) -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": name, "labels": dict(_PART_OF)},
        "spec": {
            # eksctl's profile (its role is in aws-auth): Karpenter then manages no IAM of its own.
            "instanceProfile": instance_profile(target),
            # al2023 resolves the NVIDIA variant of the AMI for GPU instance types.
            "amiSelectorTerms": [{"alias": eks.karpenter.ami_alias}],
            "subnetSelectorTerms": _discovery(target),
            "securityGroupSelectorTerms": _discovery(target),
            "blockDeviceMappings": [
                {
                    "deviceName": "/dev/xvda",  # AL2023's root volume
                    "ebs": {"volumeSize": f"{volume_gb}Gi", "volumeType": "gp3", "encrypted": True},
                }
            ],
            "tags": dict(_PART_OF),
        },
    }


def _requirements(instance_types: list[str]) -> list[dict[str, Any]]:
    return [
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(instance_types)},
        # On-demand: the vCPU quotas the preflight checks, and no spot reclaim under a Serve replica.
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},  # the image is linux/amd64
    ]


def _node_pool(name: str, labels: dict[str, str], instance_types: list[str], limits: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name, "labels": dict(_PART_OF)},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
                    "requirements": _requirements(instance_types),
                },
            },
            "limits": limits,
            "disruption": dict(_DISRUPTION),
        },
    }


def gpu_limit(profile: Profile) -> int:
    """The GPU NodePool's nvidia.com/gpu limit (see the module docstring)."""
    if profile.cluster is None or profile.chart is None:
        raise ProfileError(f"{profile.source}: Karpenter needs the chart: and cluster: sections")
    worker = profile.chart.worker
    return gpu_pool_size(worker.gpus, worker.max_replicas, profile.cluster.addons)


def objects(profile: Profile, target: EksTarget) -> list[dict[str, Any]]:
    """EC2NodeClasses then NodePools for an eks profile with Karpenter on; [] when it is off."""
    eks = eks_settings(profile)
    if not eks.karpenter.enabled:
        return []
    k, gpu = eks.karpenter, eks.gpu_nodegroup
    gpu_pool = _node_pool("gpu", {POOL_LABEL: "gpu", GPU_NODE_LABEL: "true"}, k.gpu_instance_types,
                          {"nvidia.com/gpu": gpu_limit(profile)})  # fmt: skip
    gpu_pool["spec"]["template"]["spec"]["taints"] = [gpu.taint.model_dump()]
    cpu_pool = _node_pool("cpu", {POOL_LABEL: "system"}, k.cpu_instance_types, {"cpu": k.cpu_limit})
    return [
        _node_class("gpu", eks, target, gpu.volume_size_gb),
        _node_class("cpu", eks, target, eks.system_nodegroup.volume_size_gb),
        gpu_pool,
        cpu_pool,
    ]


def snapshot(profile_name: str = "eks") -> str:
    profile = profiles.load(profile_name)
    eks = eks_settings(profile)
    header = (
        f"# GENERATED from profiles/{profile_name}.yaml by dogbooth/render/karpenter.py; do not edit.\n"
        "# Regenerate: python -m dogbooth.render.karpenter (tests/test_eks.py checks it is current).\n"
    )
    return header + dump_all(objects(profile, eks_target(eks, env={})))


if __name__ == "__main__":
    SNAPSHOT.write_text(snapshot())
    print(f"wrote {SNAPSHOT.relative_to(REPO_ROOT)}")
