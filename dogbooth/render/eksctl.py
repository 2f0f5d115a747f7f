"""The eksctl ClusterConfig, generated from a profile's `cluster.eks` section (the one source).

A CPU system nodegroup, a tainted G5 nodegroup on the AL2023 NVIDIA AMI, the EBS CSI driver add-on
and IAM for the AWS Load Balancer Controller. deploy/eks/eksctl-eks.yaml is a snapshot of it, kept
current by tests/test_plans.py.
"""

from __future__ import annotations

from typing import Any

from dogbooth.core.names import GPU_NODE_LABEL
from dogbooth.core.paths import REPO_ROOT
from dogbooth.settings.cluster import EksSettings, EksTarget, NodeGroup

GP3_STORAGE_CLASS = REPO_ROOT / "deploy" / "eks" / "storageclass-gp3.yaml"
LB_CONTROLLER_SA = ("kube-system", "aws-load-balancer-controller")


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
