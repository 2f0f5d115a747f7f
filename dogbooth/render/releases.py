"""The add-on Helm releases each profile gets, with pinned chart versions, in install order.

The order matters: on eks the AWS Load Balancer Controller must run before our chart's Ingress
asks for an ALB and JupyterHub's Service for an NLB (and must outlive both on teardown, or they are
stranded); monitoring brings the ServiceMonitor CRD the operator's metrics use; KubeRay's CRDs must
exist before our chart's RayService. ingress-nginx is a kind-only release: upstream retired it, and
on eks the Load Balancer Controller is the ingress controller.

What is not a Helm release on eks: the VPC CNI, the EBS CSI driver and the Pod Identity agent are
EKS add-ons in the eksctl ClusterConfig (AWS patches them with the cluster); Karpenter is installed
by eksctl's `karpenter:` section; the IAM role of the Load Balancer Controller is an eksctl pod
identity association (or IRSA service account). See docs/eks.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dogbooth.core.names import GPU_NODE_LABEL, KUBERAY_NAMESPACE, NAMESPACE
from dogbooth.render import argo, jupyterhub
from dogbooth.render.eksctl import LB_CONTROLLER_SA
from dogbooth.settings.cluster import ClusterSettings, KindSettings, eks_target
from dogbooth.settings.profiles import Profile

KUBERAY_VERSION = "1.7.1"  # the 1.7 bug-fix release
INGRESS_NGINX_VERSION = "4.15.1"  # kind only; controller v1.15.1, the newest chart (tag helm-chart-4.15.1)
LB_CONTROLLER_VERSION = "1.17.1"  # eks-charts; controller v2.17.1 (url-rewrite transforms since v2.14.1)
INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_CLASS = "nginx"
ALB_INGRESS_CLASS = "alb"  # the IngressClass the Load Balancer Controller's chart creates
MONITORING_NAMESPACE = "monitoring"
KUBE_PROMETHEUS_STACK_VERSION = "85.1.3"  # bundles the grafana chart 12.3.3 (Chart.yaml dependencies)
# NVIDIA's exporter chart (github.com/NVIDIA/dcgm-exporter, tag 4.5.3-4.8.2, deployment/): DCGM 4.5.3.
DCGM_EXPORTER_VERSION = "4.8.2"
# The Grafana sidecar loads every ConfigMap with this label (kube-prometheus-stack 85.1.3's own
# defaults, restated in _monitoring so the chart's dashboard ConfigMaps and the sidecar cannot drift).
DASHBOARD_LABEL = ("grafana_dashboard", "1")
# The datasource kube-prometheus-stack provisions; the dashboards pick it through a `datasource` variable.
PROMETHEUS_DATASOURCE_UID = "prometheus"

# Filled in at install time from the step that looked it up (cluster.py), shown as-is in dry runs.
VPC_ID = "${vpc_id}"


@dataclass(frozen=True)
class Release:
    """One Helm release: `chart` from `repo` at `version`, installed as `name` into `namespace`."""

    name: str
    namespace: str
    chart: str
    repo: str
    version: str
    values: dict[str, Any] = field(default_factory=dict)
    owns_load_balancer: bool = False  # its Services hold cloud load balancers: uninstall before the cluster
    phase: str = "addons"  # where it sits in a plan: platform, monitoring, operator, gpu, ingress

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "chart": self.chart,
            "repo": self.repo,
            "version": self.version,
            "values": self.values,
        }


def _lb_controller(profile: Profile, cluster: ClusterSettings) -> Release | None:
    if cluster.eks is None:
        return None
    target = eks_target(cluster.eks)
    namespace, sa = LB_CONTROLLER_SA
    values = {
        "clusterName": target.name,
        "region": target.region,
        "vpcId": VPC_ID,  # given, not discovered: node IMDS may be closed to pods
        "serviceAccount": {"create": False, "name": sa},  # eksctl made it, bound to the IAM role
        "replicaCount": 2,
        "nodeSelector": {"dogbooth.io/pool": "system"},
        # Our chart's Ingress names this class (ingress_controller below): an ALB per Ingress.
        "ingressClass": ALB_INGRESS_CLASS,
        "createIngressClassResource": True,
    }
    return Release(
        "aws-load-balancer-controller",
        namespace,
        "aws-load-balancer-controller",
        "https://aws.github.io/eks-charts",
        LB_CONTROLLER_VERSION,
        values,
        phase="platform",
    )


def _monitoring(profile: Profile, cluster: ClusterSettings) -> Release | None:
    if not cluster.addons.monitoring:
        return None
    nil_uses_helm = {
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
    }
    label, label_value = DASHBOARD_LABEL
    grafana = {
        "service": {"type": "ClusterIP"},  # port-forward only, like the Ray dashboard
        # Our chart's dashboard ConfigMaps live in the app's namespace, not Grafana's.
        "sidecar": {
            "dashboards": {"enabled": True, "label": label, "labelValue": label_value, "searchNamespace": "ALL"},
            "datasources": {"enabled": True, "uid": PROMETHEUS_DATASOURCE_UID, "isDefaultDatasource": True},
        },
    }
    values = {
        # Scrape every ServiceMonitor/PodMonitor, not only those labelled with this release.
        "prometheus": {"prometheusSpec": {**nil_uses_helm, "retention": "7d"}},
        "grafana": grafana,
        "alertmanager": {"enabled": False},
    }
    return Release(
        "kube-prometheus-stack",
        MONITORING_NAMESPACE,
        "kube-prometheus-stack",
        "https://prometheus-community.github.io/helm-charts",
        KUBE_PROMETHEUS_STACK_VERSION,
        values,
        phase="monitoring",
    )


def _kuberay(profile: Profile, cluster: ClusterSettings) -> Release:
    values: dict[str, Any] = {
        "image": {"tag": f"v{KUBERAY_VERSION}"},  # the chart's default tag is `nightly`
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "metrics": {"serviceMonitor": {"enabled": cluster.addons.monitoring}},
    }
    if cluster.eks is not None:
        values["nodeSelector"] = {"dogbooth.io/pool": "system"}
    # CRDs come from the chart's crds/ directory: Helm creates them server-side, which the
    # RayService CRD needs (it is too large for the last-applied annotation of `kubectl apply`).
    return Release(
        "kuberay-operator",
        KUBERAY_NAMESPACE,
        "kuberay-operator",
        "https://ray-project.github.io/kuberay-helm/",
        KUBERAY_VERSION,
        values,
        phase="operator",
    )


def _device_plugin(profile: Profile, cluster: ClusterSettings) -> Release | None:
    if profile.serve.deployment.num_gpus <= 0:
        return None
    values: dict[str, Any] = {
        "gfd": {"enabled": True},  # GPU feature discovery: nvidia.com/gpu.product etc. node labels
        # NFD must run on the tainted GPU nodes to label them, or the plugin's affinity never matches.
        "nfd": {"worker": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
    }
    if cluster.kind is not None:
        # nvkind style: the runtime exists only on the GPU worker, behind the `nvidia` RuntimeClass.
        values["runtimeClassName"] = "nvidia"
        values["nodeSelector"] = {GPU_NODE_LABEL: "true"}
    return Release(
        "nvidia-device-plugin",
        "nvidia-device-plugin",
        "nvidia-device-plugin",
        "https://nvidia.github.io/k8s-device-plugin",
        "0.17.4",
        values,
        phase="gpu",
    )


def _dcgm_exporter(profile: Profile, cluster: ClusterSettings) -> Release | None:
    """NVIDIA's DCGM exporter on the GPU nodes: GPU utilisation and memory (DCGM_FI_DEV_*) for Prometheus.

    The GPUs come from the device plugin above, not the GPU operator, so the exporter is its own
    release; its chart's ServiceMonitor (on by default) is picked up like every other.
    """
    if not cluster.addons.monitoring or profile.serve.deployment.num_gpus <= 0:
        return None
    values: dict[str, Any] = {
        "serviceMonitor": {"enabled": True, "interval": "15s"},
        "nodeSelector": {GPU_NODE_LABEL: "true"},  # a DaemonSet: only the nodes with a GPU to read
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if cluster.kind is not None:
        values["runtimeClassName"] = "nvidia"  # as the device plugin: only this runtime shows the GPU
    return Release(
        "dcgm-exporter",
        MONITORING_NAMESPACE,
        "dcgm-exporter",
        "https://nvidia.github.io/dcgm-exporter/helm-charts",
        DCGM_EXPORTER_VERSION,
        values,
        phase="gpu",
    )


def _ingress_values_kind(kind: KindSettings) -> dict[str, Any]:
    return {
        "controller": {
            # containerPort 80/443 of the control-plane node are what the kind config maps to the host.
            "hostPort": {"enabled": True, "ports": {"http": 80, "https": 443}},
            "nodeSelector": {"ingress-ready": "true", "kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "service": {"type": "NodePort"},  # no cloud LB on kind; the hostPorts carry the traffic
            "publishService": {"enabled": False},
            "extraArgs": {"publish-status-address": "localhost"},  # so the Ingress shows an address
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1},
            },  # hostPorts clash
            "ingressClassResource": {"name": INGRESS_CLASS},
        }
    }


def ingress_controller(profile: Profile) -> str:
    """Which controller serves our chart's Ingress: `alb` (AWS Load Balancer Controller) on eks, else `nginx`."""
    return "alb" if profile.platform == "eks" else "nginx"


def _ingress(profile: Profile, cluster: ClusterSettings) -> Release | None:
    if cluster.kind is None:
        return None  # eks: the Load Balancer Controller above serves the Ingress with an ALB
    return Release(
        "ingress-nginx",
        INGRESS_NAMESPACE,
        "ingress-nginx",
        "https://kubernetes.github.io/ingress-nginx",
        INGRESS_NGINX_VERSION,
        _ingress_values_kind(cluster.kind),
        phase="ingress",
    )


def _argo_workflows(profile: Profile, cluster: ClusterSettings) -> Release | None:
    if not cluster.addons.argo_workflows:
        return None
    namespace = profile.chart.namespace if profile.chart else NAMESPACE
    system = {"dogbooth.io/pool": "system"} if cluster.eks is not None else {}
    values = argo.argo_release_values(profile, namespace, system)
    return Release("argo-workflows", argo.ARGO_NAMESPACE, "argo-workflows",
                   "https://argoproj.github.io/argo-helm", argo.ARGO_CHART_VERSION, values)  # fmt: skip


def _jupyterhub(profile: Profile, cluster: ClusterSettings) -> Release | None:
    if jupyterhub.settings(profile) is None:
        return None
    values = jupyterhub.values(profile)
    owns_lb = values["proxy"]["service"]["type"] == "LoadBalancer"
    return Release("jupyterhub", jupyterhub.NAMESPACE, "jupyterhub", "https://hub.jupyter.org/helm-chart/",
                   jupyterhub.CHART_VERSION, values, owns_load_balancer=owns_lb)  # fmt: skip


# Install order: JupyterHub and Argo Workflows after the operator, before ingress-nginx (kind).
_BUILDERS: tuple[Callable[[Profile, ClusterSettings], Release | None], ...] = (
    _lb_controller,
    _monitoring,
    _kuberay,
    _device_plugin,
    _dcgm_exporter,
    _argo_workflows,
    _jupyterhub,
    _ingress,
)


def releases_for(profile: Profile) -> list[Release]:
    """The add-on releases of a kind or eks profile, in install order ([] for local)."""
    if profile.cluster is None or profile.platform == "local":
        return []
    releases = (build(profile, profile.cluster) for build in _BUILDERS)
    return [r for r in releases if r is not None]
