"""The eksctl ClusterConfig, generated from a profile's `cluster.eks` section (the one source).

A CPU system nodegroup; GPU nodes from Karpenter (dogbooth/render/karpenter.py), which eksctl
installs with its IAM and interruption queue, or, with Karpenter off, a tainted G5 nodegroup on the
AL2023 NVIDIA AMI. Add-ons: the VPC CNI with its network policy agent on, the EBS CSI driver; IAM
for the AWS Load Balancer Controller. deploy/eks/eksctl-eks.yaml is a snapshot of it, kept current
by tests/test_plans.py.
"""

from __future__ import annotations

import json
from typing import Any

from dogbooth.core.names import GPU_NODE_LABEL
from dogbooth.core.paths import REPO_ROOT
from dogbooth.settings.cluster import EksSettings, EksTarget, NodeGroup

GP3_STORAGE_CLASS = REPO_ROOT / "deploy" / "eks" / "storageclass-gp3.yaml"
LB_CONTROLLER_SA = ("kube-system", "aws-load-balancer-controller")
DISCOVERY_TAG = "karpenter.sh/discovery"  # Karpenter finds the subnets and security groups by it
POOL_LABEL = "dogbooth.io/pool"  # system or gpu: what our pods' nodeSelectors name
# The VPC CNI's policy agent is off by default: without it NetworkPolicy objects exist but block nothing.
VPC_CNI_CONFIG = {"enableNetworkPolicy": "true"}


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
        "privateNetworking": True,  # nodes get no public IPs; the load balancers and NAT carry traffic
        "labels": labels,
    }


def _lb_controller_iam(eks: EksSettings) -> dict[str, Any]:
    namespace, name = LB_CONTROLLER_SA
    if eks.lb_controller_iam == "pod-identity":
        iam: dict[str, Any] = {
            "podIdentityAssociations": [
                {
                    "namespace": namespace,
                    "serviceAccountName": name,
                    "createServiceAccount": True,
                    "wellKnownPolicies": {"awsLoadBalancerController": True},
                }
            ]
        }
        if eks.karpenter.enabled:
            iam["withOIDC"] = True  # eksctl gives Karpenter's controller its role through IRSA only
        return iam
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
    # Naming vpc-cni replaces eksctl's default add-on of that name; OVERWRITE (the EKS API's value,
    # which eksctl passes on as given) lets `eksctl update addon` turn the policy agent on in a
    # cluster made before it was.
    vpc_cni = {"name": "vpc-cni", "configurationValues": json.dumps(VPC_CNI_CONFIG), "resolveConflicts": "OVERWRITE"}
    ebs: dict[str, Any] = {"name": "aws-ebs-csi-driver"}
    if eks.lb_controller_iam == "pod-identity":
        ebs["useDefaultPodIdentityAssociations"] = True
        return [vpc_cni, {"name": "eks-pod-identity-agent"}, ebs]
    ebs["wellKnownPolicies"] = {"ebsCSIController": True}
    return [vpc_cni, ebs]


def _gpu_nodegroup(eks: EksSettings) -> dict[str, Any]:
    gpu = eks.gpu_nodegroup
    group = _nodegroup(gpu, {POOL_LABEL: "gpu", GPU_NODE_LABEL: "true"})
    group["amiFamily"] = gpu.ami_family  # a GPU instance type makes eksctl pick the NVIDIA variant
    group["taints"] = [gpu.taint.model_dump()]
    return group


def eksctl_config(eks: EksSettings, target: EksTarget) -> dict[str, Any]:
    """The ClusterConfig for `eksctl create cluster -f`; name and region come from `target`."""
    tags = {"app.kubernetes.io/part-of": "dogbooth"}
    groups = [_nodegroup(eks.system_nodegroup, {POOL_LABEL: "system"})]
    if eks.karpenter.enabled:
        # eksctl copies this tag onto the private subnets and the node security groups it makes.
        tags[DISCOVERY_TAG] = target.name
    else:
        groups.append(_gpu_nodegroup(eks))
    config: dict[str, Any] = {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {
            "name": target.name,
            "region": target.region,
            "version": eks.kubernetes_version,
            "tags": tags,
        },
        "iam": _lb_controller_iam(eks),
        "addons": _addons(eks),
        "managedNodeGroups": groups,
    }
    if eks.karpenter.enabled:
        # eksctl always points the chart at an interruption queue named after the cluster; this
        # creates it (with the spot, rebalance, health and state-change rules).
        config["karpenter"] = {"version": eks.karpenter.version, "withSpotInterruptionQueue": True}
    return config
