"""The cluster definitions, generated from a profile's `cluster:` section (the one source).

- `ctlptl_config`: a ctlptl Registry plus a kind Cluster whose control-plane maps the ingress
  ports to the host (ingress-nginx binds them as hostPorts) and, for kind-gpu, a worker node that
  gets the host's GPUs the way NVIDIA's nvkind does it.
- `eksctl_config`: an eksctl ClusterConfig with a CPU system nodegroup, a tainted G5 nodegroup on
  the AL2023 NVIDIA AMI, the EBS CSI driver add-on and IAM for the AWS Load Balancer Controller.

deploy/ holds the static pieces (the GPU node script, the RuntimeClass, the gp3 StorageClass)
and snapshots of what these functions produce, kept equal to them by tests/test_plans.py.
"""

from __future__ import annotations

from typing import Any

import yaml

from dogbooth.core.paths import REPO_ROOT
from dogbooth.settings import profiles
from dogbooth.settings.cluster import EksSettings, EksTarget, KindSettings, NodeGroup, eks_target

DEPLOY_DIR = REPO_ROOT / "deploy"
GPU_NODE_SCRIPT = DEPLOY_DIR / "kind" / "gpu-node-setup.sh"
NVIDIA_RUNTIME_CLASS = DEPLOY_DIR / "kind" / "nvidia-runtimeclass.yaml"
GP3_STORAGE_CLASS = DEPLOY_DIR / "eks" / "storageclass-gp3.yaml"

# nvkind's trick: with `accept-nvidia-visible-devices-as-volume-mounts = true` on the host, the
# nvidia runtime injects every GPU into a container that has this path mounted.
NVIDIA_ALL_DEVICES_MOUNT = {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}
GPU_NODE_LABEL = "nvidia.com/gpu.present"
LB_CONTROLLER_SA = ("kube-system", "aws-load-balancer-controller")


def kind_cluster_name(kind: KindSettings) -> str:
    return kind.context  # ctlptl names kind clusters after their kube context: kind-<name>


def kind_gpu_node(kind: KindSettings) -> str:
    """The docker container of the GPU worker node (kind names nodes <cluster>-worker)."""
    return f"{kind.cluster_name}-worker"


def ctlptl_config(kind: KindSettings) -> list[dict[str, Any]]:
    """ctlptl documents for `ctlptl apply -f -`: the registry first, then the cluster that uses it."""
    registry = {
        "apiVersion": "ctlptl.dev/v1alpha1",
        "kind": "Registry",
        "name": kind.registry_name,
        "port": kind.registry_port,
    }
    control_plane: dict[str, Any] = {
        "role": "control-plane",
        "labels": {"ingress-ready": "true"},  # ingress-nginx's nodeSelector (releases.py)
        "extraPortMappings": [
            {
                "containerPort": port,
                "hostPort": host_port,
                "listenAddress": kind.listen_address,
                "protocol": "TCP",
            }
            for port, host_port in ((80, kind.ingress_http_port), (443, kind.ingress_https_port))
        ],
    }
    nodes = [control_plane]
    if kind.gpu:
        nodes.append(
            {
                "role": "worker",
                "labels": {GPU_NODE_LABEL: "true"},
                "extraMounts": [dict(NVIDIA_ALL_DEVICES_MOUNT)],
            }
        )
    cluster = {
        "apiVersion": "ctlptl.dev/v1alpha1",
        "kind": "Cluster",
        "product": "kind",
        "name": kind_cluster_name(kind),
        "registry": kind.registry_name,
        "kubernetesVersion": kind.kubernetes_version,
        "kindV1Alpha4Cluster": {"nodes": nodes},
    }
    return [registry, cluster]


def _nodegroup(group: NodeGroup, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": group.name,
        "instanceType": group.instance_type,
        "amiFamily": "AmazonLinux2023",
        "minSize": group.min_size,
        "desiredCapacity": group.desired_size,
        "maxSize": group.max_size,
        "volumeSize": group.volume_size_gb,
        "volumeType": "gp3",
        "privateNetworking": True,  # nodes get no public IPs; the NLB and NAT carry traffic
        "labels": labels,
    }


def _lb_controller_iam(eks: EksSettings) -> dict[str, Any]:
    namespace, name = LB_CONTROLLER_SA
    if eks.lb_controller_iam == "pod-identity":
        return {
            "podIdentityAssociations": [
                {
                    "namespace": namespace,
                    "serviceAccountName": name,
                    "createServiceAccount": True,
                    "wellKnownPolicies": {"awsLoadBalancerController": True},
                }
            ]
        }
    return {
        "withOIDC": True,
        "serviceAccounts": [
            {
                "metadata": {"name": name, "namespace": namespace},
                "wellKnownPolicies": {"awsLoadBalancerController": True},
            }
        ],
    }


def _addons(eks: EksSettings) -> list[dict[str, Any]]:
    ebs: dict[str, Any] = {"name": "aws-ebs-csi-driver"}
    if eks.lb_controller_iam == "pod-identity":
        ebs["useDefaultPodIdentityAssociations"] = True
        return [{"name": "eks-pod-identity-agent"}, ebs]
    ebs["wellKnownPolicies"] = {"ebsCSIController": True}
    return [ebs]


def eksctl_config(eks: EksSettings, target: EksTarget) -> dict[str, Any]:
    """The ClusterConfig for `eksctl create cluster -f`; name and region come from `target`."""
    gpu = eks.gpu_nodegroup
    gpu_group = _nodegroup(gpu, {"dogbooth.io/pool": "gpu", GPU_NODE_LABEL: "true"})
    gpu_group["amiFamily"] = gpu.ami_family  # a GPU instance type makes eksctl pick the NVIDIA variant
    gpu_group["taints"] = [gpu.taint.model_dump()]
    return {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {
            "name": target.name,
            "region": target.region,
            "version": eks.kubernetes_version,
            "tags": {"app.kubernetes.io/part-of": "dogbooth"},
        },
        "iam": _lb_controller_iam(eks),
        "addons": _addons(eks),
        "managedNodeGroups": [_nodegroup(eks.system_nodegroup, {"dogbooth.io/pool": "system"}), gpu_group],
    }


def to_yaml(documents: list[dict[str, Any]] | dict[str, Any]) -> str:
    docs = documents if isinstance(documents, list) else [documents]
    return yaml.safe_dump_all(docs, sort_keys=False)


SNAPSHOTS = {
    "kind-cpu": DEPLOY_DIR / "kind" / "ctlptl-kind-cpu.yaml",
    "kind-gpu": DEPLOY_DIR / "kind" / "ctlptl-kind-gpu.yaml",
    "eks": DEPLOY_DIR / "eks" / "eksctl-eks.yaml",
}


def snapshot(profile_name: str) -> str:
    """What deploy/ shows for a profile: the generated config, with the profile's own region (no env)."""

    profile = profiles.load(profile_name)
    cluster = profile.cluster
    header = (
        f"# GENERATED from profiles/{profile_name}.yaml by dogbooth/render/clusterconfig.py; do not edit.\n"
        "# Regenerate: python -m dogbooth.render.clusterconfig (tests/test_plans.py checks it is current).\n"
    )
    if cluster is not None and cluster.kind is not None:
        return header + to_yaml(ctlptl_config(cluster.kind))
    if cluster is not None and cluster.eks is not None:
        return header + to_yaml(eksctl_config(cluster.eks, eks_target(cluster.eks, env={})))
    raise ValueError(f"profile {profile_name} has no cluster section")


if __name__ == "__main__":
    for name, path in SNAPSHOTS.items():
        path.write_text(snapshot(name))
        print(path)
