"""The cluster definitions, generated from a profile's `cluster:` section (the one source).

- `ctlptl_config`: a ctlptl Registry plus a kind Cluster whose control-plane maps the ingress
  ports to the host (ingress-nginx binds them as hostPorts) and, for kind-gpu, a worker node that
  gets the host's GPUs the way NVIDIA's nvkind does it. Every node runs the profile's pinned
  `kindest/node@sha256` image.
- `memory_plan` / `check_memory_budget`: what the kind profile's pods may use, during an image
  rebuild too, against the memory Docker gives the cluster.
- `snapshot`: what deploy/ shows for a profile, the ctlptl config above or the eksctl
  ClusterConfig of dogbooth/render/eksctl.py.

deploy/ holds the static pieces (the GPU node script, the RuntimeClass, the gp3 StorageClass)
and snapshots of what these functions produce, kept equal to them by tests/test_plans.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from dogbooth.core.errors import ProfileError
from dogbooth.core.names import GPU_NODE_LABEL
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.yamlfile import dump_all
from dogbooth.render.chart import CHART_DIR
from dogbooth.render.eksctl import eksctl_config
from dogbooth.settings import profiles
from dogbooth.settings.chart import quantity
from dogbooth.settings.cluster import KindSettings, eks_target
from dogbooth.settings.profiles import Profile, kind_settings

DEPLOY_DIR = REPO_ROOT / "deploy"
GPU_NODE_SCRIPT = DEPLOY_DIR / "kind" / "gpu-node-setup.sh"
NVIDIA_RUNTIME_CLASS = DEPLOY_DIR / "kind" / "nvidia-runtimeclass.yaml"

# nvkind's trick: with `accept-nvidia-visible-devices-as-volume-mounts = true` on the host, the
# nvidia runtime injects every GPU into a container that has this path mounted.
NVIDIA_ALL_DEVICES_MOUNT = {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}


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
        "image": kind.node_image,
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
                "image": kind.node_image,
                "labels": {GPU_NODE_LABEL: "true"},
                "extraMounts": [dict(NVIDIA_ALL_DEVICES_MOUNT)],
            }
        )
    cluster = {
        "apiVersion": "ctlptl.dev/v1alpha1",
        "kind": "Cluster",
        "product": "kind",
        "name": kind.context,  # ctlptl names kind clusters after their kube context: kind-<name>
        "registry": kind.registry_name,
        # No `kubernetesVersion`: ctlptl would look it up in its table of kind releases (and fail
        # for a kind newer than that ctlptl) instead of using the pinned image on the nodes.
        "kindV1Alpha4Cluster": {"nodes": nodes},
    }
    return [registry, cluster]


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes of memory a kind profile needs: one RayCluster, how many run at once, and the total."""

    budget: float
    reserve: float
    per_cluster: float
    clusters_during_rebuild: int

    @property
    def peak(self) -> float:
        return self.reserve + self.clusters_during_rebuild * self.per_cluster


def _autoscaler_memory() -> float:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return quantity(values["autoscaler"]["resources"]["limits"]["memory"])


def memory_plan(profile: Profile) -> MemoryPlan:
    """Sum the memory limits of one RayCluster (a pod may grow to its limit) and the rebuild's count.

    Under upgradeStrategy NewCluster a new image starts a second, full RayCluster next to the
    running one; under None it replaces the running one, so only one exists at a time.
    """
    kind = kind_settings(profile)
    if profile.chart is None:
        raise ProfileError(f"{profile.source}: chart: missing (the memory budget counts its pods)")
    c = profile.chart
    per_cluster = quantity(c.head.resources.limits.memory)
    per_cluster += c.worker.max_replicas * quantity(c.worker.resources.limits.memory)
    if c.worker.max_replicas > c.worker.min_replicas:  # the chart adds the autoscaler sidecar
        per_cluster += _autoscaler_memory()
    return MemoryPlan(
        budget=quantity(kind.memory_budget),
        reserve=quantity(kind.system_reserve),
        per_cluster=per_cluster,
        clusters_during_rebuild=2 if c.upgrade_strategy == "NewCluster" else 1,
    )


def check_memory_budget(profile: Profile) -> MemoryPlan:
    """The plan, or a ProfileError naming the file and key when it does not fit."""
    plan = memory_plan(profile)
    if plan.peak > plan.budget:
        gib = 2**30
        raise ProfileError(
            f"{profile.source}: cluster.kind.memory_budget: {plan.budget / gib:g} GiB is too little: "
            f"system_reserve {plan.reserve / gib:g} GiB + {plan.clusters_during_rebuild} RayClusters x "
            f"{plan.per_cluster / gib:g} GiB (head + workers, memory limits) = {plan.peak / gib:g} GiB. "
            "Give Docker more memory and raise memory_budget, shrink chart.head/worker resources, or "
            "use chart.upgrade_strategy None so a rebuild replaces the RayCluster instead of doubling it"
        )
    return plan


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
        return header + dump_all(ctlptl_config(cluster.kind))
    if cluster is not None and cluster.eks is not None:
        return header + dump_all([eksctl_config(cluster.eks, eks_target(cluster.eks, env={}))])
    raise ValueError(f"profile {profile_name} has no cluster section")


if __name__ == "__main__":
    for name, path in SNAPSHOTS.items():
        path.write_text(snapshot(name))
        print(path)
