"""The `cluster:` section of a profile: where the cluster runs and which add-ons it gets.

kind profiles fill `cluster.kind`, the eks profile fills `cluster.eks`; `cluster.addons` holds the
optional add-on switches shared by both. The ctlptl config, the eksctl ClusterConfig and the add-on
release list are all generated from these models (dogbooth/render/clusterconfig.py, dogbooth/render/releases.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dogbooth.core.errors import ProfileError
from dogbooth.core.model import Strict
from dogbooth.core.names import DNS_LABEL
from dogbooth.settings.chart import Quantity, quantity

_KIND_NAME_MAX = 40  # kind cluster and ctlptl registry names become container and context names
# EKS bills extended support for a minor past its 14 months of standard support; 1.33's ended on
# 2026-07-29 (docs/eks.md). Older minors are refused so no new cluster starts on the surcharge.
EKS_OLDEST_MINOR = 34


class KindSettings(Strict):
    """A kind cluster created by ctlptl, with ctlptl's local registry wired in."""

    cluster_name: str = Field("dogbooth", description="kind cluster name; the kube context is kind-<name>")
    # Pinned by digest on every node, never through ctlptl's `kubernetesVersion`: ctlptl resolves
    # that in its own table of kind releases and fails for a kind newer than the ctlptl build. This
    # is the 1.33 image kind v0.31.0's release notes list (the minimum kind in dogbooth/core/tools.py);
    # kind supports an image with the release it was built for (docs/kind.md, version matrix).
    node_image: str = Field(
        "kindest/node:v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040",
        description="kindest/node:vX.Y.Z@sha256:<digest> from the release notes of the kind you run",
    )
    registry_name: str = Field("ctlptl-registry", description="ctlptl registry container; Tilt pushes here")
    registry_port: int = Field(5005, ge=1024, le=65535, description="host port of the registry")
    listen_address: str = Field("127.0.0.1", description="host address the ingress ports bind to")
    ingress_http_port: int = Field(8080, ge=1, le=65535, description="host port -> ingress-nginx :80")
    ingress_https_port: int = Field(8443, ge=1, le=65535, description="host port -> ingress-nginx :443")
    gpu: bool = Field(False, description="pass the host's NVIDIA GPUs into a worker node (nvkind style)")
    memory_budget: Quantity = Field(
        "8Gi", description="memory Docker gives the kind nodes (Docker Desktop: Settings > Resources)"
    )
    system_reserve: Quantity = Field(
        "3Gi",
        description="part of memory_budget kept for the control plane, add-ons, registry, Docker and image builds",
    )

    @field_validator("cluster_name", "registry_name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if len(v) > _KIND_NAME_MAX or not re.match(DNS_LABEL, v):
            raise ValueError("must be lower-case letters, digits and '-', at most 40 characters")
        return v

    @field_validator("node_image")
    @classmethod
    def _pinned_node_image(cls, v: str) -> str:
        if not re.match(r"^kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$", v):
            raise ValueError(
                "must be kindest/node:vX.Y.Z@sha256:<64 hex digits>, an image from the kind release notes "
                "(a tag alone can move, and kind only supports the digests it published)"
            )
        return v

    @model_validator(mode="after")
    def _reserve_fits(self) -> KindSettings:
        if quantity(self.system_reserve) >= quantity(self.memory_budget):
            raise ValueError("system_reserve must be below memory_budget, or nothing is left for dogbooth's pods")
        return self

    @property
    def context(self) -> str:
        return f"kind-{self.cluster_name}"

    @property
    def kubernetes_version(self) -> str:
        """The node image's Kubernetes version, e.g. v1.33.7 (for kubectl's version skew)."""
        return self.node_image.split(":", 1)[1].split("@", 1)[0]


class NodeGroup(Strict):
    name: str
    instance_type: str
    min_size: int = Field(1, ge=0)
    max_size: int = Field(2, ge=1)
    desired_size: int = Field(1, ge=0)
    volume_size_gb: int = Field(100, ge=20, description="root volume; images and the model cache live here")

    @model_validator(mode="after")
    def _sizes(self) -> NodeGroup:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError("need min_size <= desired_size <= max_size")
        return self


class Taint(Strict):
    key: str = "nvidia.com/gpu"
    value: str = "true"
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class GpuNodeGroup(NodeGroup):
    """G5 (A10G, 24 GB) nodes: only pods that tolerate the taint and request nvidia.com/gpu land here.

    With Karpenter (cluster.eks.karpenter.enabled) eksctl makes no such nodegroup: instance_type,
    volume_size_gb and taint shape Karpenter's GPU NodePool (whose limit is gpu_pool_size), and
    max_size is the node count the quota preflight (`nox -s doctor`) sizes for; min_size and
    desired_size are then unused.
    """

    name: str = "gpu-g5"
    instance_type: str = Field("g5.xlarge", pattern=r"^g5\.(\d+)?xlarge$", description="g5.xlarge .. g5.48xlarge")
    min_size: int = Field(0, ge=0, description="0 lets the group scale to nothing when idle")
    desired_size: int = Field(1, ge=0)
    max_size: int = Field(2, ge=1)
    ami_family: Literal["AmazonLinux2023"] = Field(
        "AmazonLinux2023", description="eksctl picks the AL2023 NVIDIA variant for GPU instance types"
    )
    taint: Taint = Taint()


class KarpenterSettings(Strict):
    """Karpenter adds nodes for pending pods and removes idle ones (dogbooth/render/karpenter.py).

    eksctl installs it when it creates the cluster (its `karpenter:` section: controller IAM role,
    node role and instance profile, interruption queue, Helm chart); the NodePools come from the plan.
    """

    enabled: bool = Field(True, description="false: a fixed-size managed GPU nodegroup instead (gpu_nodegroup)")
    # 1.14.1: the newest release; Karpenter's compatibility matrix needs >= 1.9 for Kubernetes 1.35,
    # and ../shared/karpenter-crds (what the tests validate against) are this release's CRDs.
    version: str = Field("1.14.1", pattern=r"^\d+\.\d+\.\d+$", description="Karpenter Helm chart eksctl installs")
    ami_alias: str = Field(
        "al2023@latest",
        pattern=r"^al2023@(latest|v\d{8})$",
        description="EC2NodeClass AMI: latest follows AWS releases (nodes drift, one GPU node at a time); "
        "al2023@vYYYYMMDD pins one",
    )
    gpu_instance_types: list[str] = Field(
        default_factory=lambda: ["g5.xlarge", "g6.xlarge"],
        min_length=1,
        description="single-GPU G5 (A10G) / G6 (L4) types the GPU NodePool may launch, one worker pod each",
    )
    cpu_instance_types: list[str] = Field(
        default_factory=lambda: ["m6i.xlarge", "m7i.xlarge"],
        min_length=1,
        description="CPU NodePool types: overflow for the system pods when the system nodegroup is full",
    )
    cpu_limit: int = Field(16, ge=1, description="vCPUs the CPU NodePool may add in all")

    @field_validator("gpu_instance_types")
    @classmethod
    def _single_gpu_types(cls, v: list[str]) -> list[str]:
        # xlarge .. 16xlarge of G5 and G6 carry one GPU each, so the NodePool's GPU limit is also its node limit.
        bad = [t for t in v if not re.match(r"^g[56]\.(2|4|8|16)?xlarge$", t)]
        if bad:
            raise ValueError(f"{bad}: only the single-GPU sizes g5/g6 .xlarge to .16xlarge")
        return v


class EksSettings(Strict):
    """An EKS cluster made by eksctl from the ClusterConfig generated in dogbooth/render/clusterconfig.py."""

    name: str = Field("dogbooth", description="cluster name; env DOGBOOTH_EKS_CLUSTER overrides")
    region: str | None = Field(
        None, description="AWS region; env DOGBOOTH_EKS_REGION overrides, AWS_REGION fills it when null"
    )
    # 1.35: the newest minor eksctl 0.230 names (pkg/apis/eksctl.io/v1alpha5/types.go), in standard support.
    kubernetes_version: str = Field("1.35", pattern=r"^1\.\d+$", description=f"1.{EKS_OLDEST_MINOR} or newer")
    system_nodegroup: NodeGroup = NodeGroup(
        name="system", instance_type="m6i.xlarge", min_size=2, desired_size=2, max_size=3, volume_size_gb=50
    )
    gpu_nodegroup: GpuNodeGroup = GpuNodeGroup()
    ecr_repository: str = Field("dogbooth/serve", pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
    lb_controller_iam: Literal["pod-identity", "irsa"] = Field(
        "pod-identity", description="how the AWS Load Balancer Controller gets its IAM role"
    )
    karpenter: KarpenterSettings = Field(default_factory=KarpenterSettings)

    @field_validator("name")
    @classmethod
    def _cluster_name(cls, v: str) -> str:
        if not re.match(r"^[a-zA-Z][-a-zA-Z0-9]{0,99}$", v):
            raise ValueError("EKS names start with a letter and hold letters, digits and '-'")
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _standard_support(cls, v: str) -> str:
        if int(v.split(".")[1]) < EKS_OLDEST_MINOR:
            raise ValueError(
                f"{v} is past EKS standard support, so the cluster would be billed extended support; "
                f"use 1.{EKS_OLDEST_MINOR} or newer (docs/eks.md, Kubernetes version)"
            )
        return v

    @model_validator(mode="after")
    def _gpu_type_in_pool(self) -> EksSettings:
        # The preflight checks gpu_nodegroup.instance_type's offering and quota: it must be one Karpenter may use.
        if self.karpenter.enabled and self.gpu_nodegroup.instance_type not in self.karpenter.gpu_instance_types:
            raise ValueError(
                f"gpu_nodegroup.instance_type {self.gpu_nodegroup.instance_type} is not in "
                f"karpenter.gpu_instance_types {self.karpenter.gpu_instance_types}"
            )
        return self


class JupyterHubSettings(Strict):
    """The JupyterHub add-on (z2jh chart); values made in dogbooth/render/jupyterhub.py, see docs/jupyterhub.md."""

    enabled: bool = Field(False, description="install JupyterHub with the dogbooth notebook")
    auth: Literal["native", "github"] = Field(
        "native", description="native: NativeAuthenticator (sign-up + admin approval); github: GitHub OAuth"
    )
    github_org: str | None = Field(None, description="auth github: only members of this org may log in")
    image: str = Field(
        "quay.io/jupyter/pytorch-notebook:pytorch-2.5.1",
        pattern=r"^[^:@\s]+:[^:\s]+$",
        description="single-user image (repository:tag, pinned); a cuda12-* tag for GPU profiles",
    )
    pip_spec: str | None = Field(None, description="pip requirement that installs dogbooth in the notebook")
    gpu: bool = Field(False, description="single-user servers get nvidia.com/gpu: 1 and the GPU toleration")
    storage_size: str = Field("10Gi", pattern=r"^\d+(Mi|Gi|Ti)$", description="per-user home volume")
    storage_class: str | None = Field(None, description="null = the cluster default")
    load_balancer: Literal["internal", "internet-facing", "none"] = Field(
        "internal", description="eks: the hub's proxy Service as an internal or public NLB; none = ClusterIP"
    )
    max_gpu_servers: int = Field(
        1, ge=0, description="eks + Karpenter, gpu: GPU servers at once the GPU NodePool's limit makes room for"
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> JupyterHubSettings:
        if self.auth == "github" and not self.github_org:
            raise ValueError("auth github needs github_org: without it any GitHub account could log in")
        return self


class Addons(Strict):
    """Optional add-ons."""

    monitoring: bool = Field(
        False,
        description="kube-prometheus-stack (and NVIDIA's DCGM exporter where Serve wants GPUs); the chart "
        "then adds a PodMonitor for Ray's exporters and the Grafana dashboards (docs/observability.md)",
    )
    ingress_internal: bool = Field(True, description="eks: the ALB of the app's Ingress is internal (VPC only)")
    argo_workflows: bool = Field(False, description="Argo Workflows + the dogbooth-finetune WorkflowTemplate")
    jupyterhub: JupyterHubSettings = Field(default_factory=JupyterHubSettings)


def gpu_pool_size(worker_gpus: int, worker_max_replicas: int, addons: Addons) -> int:
    """GPUs the eks GPU pool must hold at most: every Ray GPU worker's, plus the JupyterHub GPU servers.

    The one place the number is made: Karpenter's GPU NodePool limit (render/karpenter.py) reads it.
    """
    hub = addons.jupyterhub
    notebooks = hub.max_gpu_servers if hub.enabled and hub.gpu else 0
    return worker_gpus * worker_max_replicas + notebooks


class ClusterSettings(Strict):
    kind: KindSettings | None = None
    eks: EksSettings | None = None
    addons: Addons = Addons()


def check_platform(platform: str, cluster: ClusterSettings | None) -> None:
    """ValueError (reported with the profile's file and key) when `cluster:` does not fit the platform."""
    if platform == "local":
        if cluster is not None and (cluster.kind or cluster.eks):
            raise ValueError("platform local takes no cluster.kind or cluster.eks section")
        return
    section = getattr(cluster, platform, None) if cluster else None
    if section is None:
        raise ValueError(f"platform {platform} needs a cluster.{platform} section")
    other = "eks" if platform == "kind" else "kind"
    if getattr(cluster, other, None) is not None:
        raise ValueError(f"platform {platform} cannot also have a cluster.{other} section")


class EksTarget(Strict):
    """The concrete cluster a command acts on: profile settings with the environment applied."""

    name: str
    region: str


def eks_target(settings: EksSettings, env: Mapping[str, str] | None = None) -> EksTarget:
    """Name and region: DOGBOOTH_EKS_* env first, then the profile, then AWS_REGION / AWS_DEFAULT_REGION."""
    env = os.environ if env is None else env
    region = env.get("DOGBOOTH_EKS_REGION") or settings.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise ProfileError(
            "cluster.eks.region: no region; set it in the profile or export DOGBOOTH_EKS_REGION or AWS_REGION"
        )
    return EksTarget(name=env.get("DOGBOOTH_EKS_CLUSTER") or settings.name, region=region)
