"""The cluster definitions, generated from a profile's `cluster:` section (the one source).

- `ctlptl_config`: a ctlptl Registry plus a kind Cluster whose control-plane maps the ingress
  ports to the host (ingress-nginx binds them as hostPorts) and, for kind-gpu, a worker node that
  gets the host's GPUs the way NVIDIA's nvkind does it.
- `snapshot`: what deploy/ shows for a profile, the ctlptl config above or the eksctl
  ClusterConfig of dogbooth/render/eksctl.py.

deploy/ holds the static pieces (the GPU node script, the RuntimeClass, the gp3 StorageClass)
and snapshots of what these functions produce, kept equal to them by tests/test_plans.py.
"""

from __future__ import annotations

from typing import Any

import yaml

from dogbooth.core.names import GPU_NODE_LABEL
from dogbooth.core.paths import REPO_ROOT
from dogbooth.render.eksctl import eksctl_config
from dogbooth.settings import profiles
from dogbooth.settings.cluster import KindSettings, eks_target

DEPLOY_DIR = REPO_ROOT / "deploy"
GPU_NODE_SCRIPT = DEPLOY_DIR / "kind" / "gpu-node-setup.sh"
NVIDIA_RUNTIME_CLASS = DEPLOY_DIR / "kind" / "nvidia-runtimeclass.yaml"

# nvkind's trick: with `accept-nvidia-visible-devices-as-volume-mounts = true` on the host, the
# nvidia runtime injects every GPU into a container that has this path mounted.
NVIDIA_ALL_DEVICES_MOUNT = {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}


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
