"""The profile's `chart:` section: what our Helm chart needs beyond the Serve config.

Each field maps to one key of `charts/dogbooth/values.yaml` (see `dogbooth.render.chart.chart_values`);
the Serve settings themselves stay in the profile's `serve:` section and reach the chart as
`serveConfig`, so nothing here repeats them. `check_fits` ties the two together: the worker pods
must be able to hold the Serve replicas the profile asks for.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from dogbooth.core.model import Strict
from dogbooth.core.names import DASHBOARD_PORT, DNS_LABEL, KUBERAY_NAMESPACE, NAMESPACE

# Kubernetes quantity syntax (resource.Quantity): 2, 500m, 8Gi, 1.5.
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_SUFFIX = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str) -> float:
    """A Kubernetes quantity as a number: `500m` -> 0.5, `2Gi` -> 2147483648."""
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
    unit = match.group(2)
    number = float(value[: len(value) - len(unit)] if unit else value)
    return number * _SUFFIX[unit] if unit else number


def _check_quantity(value: str) -> str:
    quantity(value)
    return value


# A string field that must parse as a Kubernetes quantity; the error names the field like any other.
Quantity = Annotated[str, AfterValidator(_check_quantity)]


class Quantities(Strict):
    cpu: Quantity = Field(description="CPU cores, e.g. 2 or 500m")
    memory: Quantity = Field(description="memory, e.g. 8Gi")


class Resources(Strict):
    """Container requests and limits; both are always set (the security review checks limits)."""

    requests: Quantities
    limits: Quantities

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        for key in ("cpu", "memory"):
            if quantity(getattr(self.limits, key)) < quantity(getattr(self.requests, key)):
                raise ValueError(f"limits.{key} must be >= requests.{key}")
        return self


class ImageSettings(Strict):
    repository: str = Field(default="dogbooth-serve", min_length=1, description="Tilt and ECR replace it")
    tag: str = Field(min_length=1, description="pinned tag; never `latest`")
    variant: Literal["cpu", "cu126"] = Field(description="services/Dockerfile VARIANT build arg")
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"

    @field_validator("tag")
    @classmethod
    def _pinned(cls, v: str) -> str:
        if v == "latest" or ":" in v:
            raise ValueError("must be a pinned tag such as 0.1.0-cpu (not `latest`, no colon)")
        return v


class Toleration(Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class HeadSettings(Strict):
    """The Ray head: GCS, dashboard and Serve controller. It never gets a GPU or a replica."""

    resources: Resources


class WorkerSettings(Strict):
    """The worker group where the Serve replicas run."""

    resources: Resources
    gpus: int = Field(default=0, ge=0, le=8, description="nvidia.com/gpu per worker pod")
    replicas: int = Field(default=1, ge=0)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1, description="> min_replicas turns on the Ray autoscaler")
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    runtime_class_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="kind-gpu: nvidia, the node's extra containerd runtime that injects the GPUs; "
        "null where the node's default runtime does (EKS GPU AMIs) or no GPU is wanted",
    )

    @model_validator(mode="after")
    def _bounds(self) -> WorkerSettings:
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError("need min_replicas <= replicas <= max_replicas")
        if self.gpus and not any(t.key == "nvidia.com/gpu" for t in self.tolerations):
            raise ValueError("GPU workers must tolerate the nvidia.com/gpu taint (add it to tolerations)")
        return self


class ModelCache(Strict):
    """Where models are cached, so a restarted replica does not download again.

    pvc: one shared claim (needs ReadWriteMany for more than one worker); ephemeral: a claim per
    worker pod from `storage_class`, which outlives container and replica restarts; host_path: the
    node's disk (kind, where the node itself can mount a host directory).
    """

    kind: Literal["pvc", "ephemeral", "host_path"]
    size: Quantity = "50Gi"
    storage_class: str | None = None
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = "ReadWriteOnce"
    host_path: str | None = Field(default=None, description="node directory, writable by uid 1000")
    mount_path: str = Field(default="/home/ray/cache", pattern=r"^/")

    @model_validator(mode="after")
    def _complete(self) -> ModelCache:
        if self.kind == "host_path" and not self.host_path:
            raise ValueError("kind host_path needs host_path")
        if self.kind != "host_path" and self.host_path:
            raise ValueError(f"host_path is only used with kind host_path (kind is {self.kind})")
        return self


class IngressSettings(Strict):
    enabled: bool = True
    host: str | None = Field(default=None, description="virtual host; null = any host")
    class_name: str = "nginx"


class SecretRef(Strict):
    secret_name: str = Field(pattern=DNS_LABEL[:-1] + r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    secret_key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$")


class ApiKeySettings(Strict):
    """When enabled, the pods get the API key from this Secret; the app then requires it."""

    enabled: bool = False
    secret: SecretRef = SecretRef(secret_name="dogbooth-api-key", secret_key="api-key")


class NetworkPolicySettings(Strict):
    enabled: bool = True
    operator_namespace: str = Field(
        default=KUBERAY_NAMESPACE,
        pattern=DNS_LABEL,
        description=f"where kuberay-operator runs; it alone reaches the dashboard ({DASHBOARD_PORT})",
    )
    metrics_namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="a Prometheus namespace allowed to scrape Ray's metrics port",
    )


class ChartSettings(Strict):
    namespace: str = Field(default=NAMESPACE, pattern=DNS_LABEL)
    image: ImageSettings
    head: HeadSettings
    worker: WorkerSettings
    model_cache: ModelCache
    ingress: IngressSettings = IngressSettings()
    api_key: ApiKeySettings = ApiKeySettings()
    hf_token: SecretRef | None = Field(default=None, description="Secret with HF_TOKEN for gated models")
    network_policy: NetworkPolicySettings = NetworkPolicySettings()
    ray_token_auth: bool = Field(default=True, description="KubeRay authOptions mode token: the dashboard runs code")
    # What KubeRay does when a new image or pod spec reaches the RayService (KubeRay 1.7 RayService
    # spec.upgradeStrategy.type). NewCluster: a second, full RayCluster comes up and takes the
    # traffic once ready (zero downtime, twice the memory and GPUs meanwhile). None: KubeRay leaves
    # the running RayCluster as it is; the new spec runs once that RayCluster is deleted (docs/kind.md).
    # NewClusterWithIncrementalUpgrade is not offered: it needs the Gateway API and the autoscaler.
    upgrade_strategy: Literal["NewCluster", "None"] = Field(
        default="NewCluster", description="RayService upgradeStrategy.type on a new image: NewCluster or None"
    )

    @model_validator(mode="after")
    def _shared_cache(self) -> ChartSettings:
        cache = self.model_cache
        if cache.kind == "pvc" and cache.access_mode != "ReadWriteMany" and self.worker.max_replicas > 1:
            raise ValueError(
                f"model_cache: a {cache.access_mode} claim attaches to one node, but worker.max_replicas "
                f"is {self.worker.max_replicas}; use kind ephemeral or access_mode ReadWriteMany"
            )
        return self
