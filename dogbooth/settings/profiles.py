"""Profiles: what differs between local, kind-cpu, kind-gpu and eks, in one typed YAML file each.

The `serve.app` section *is* the Serve app builder's arguments (`services.schemas.AppArgs`), so
no setting is written in two places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from dogbooth.core.errors import ProfileError
from dogbooth.core.model import Strict
from dogbooth.core.names import DASHBOARD_PORT, LOCAL_METRICS_PORT, SERVE_PORT
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.yamlfile import describe, read_mapping
from dogbooth.settings.chart import ChartSettings, quantity
from dogbooth.settings.cluster import ClusterSettings, EksSettings, KindSettings, check_platform
from services.models import ModelError, parse_model_ref
from services.schemas import AppArgs

PROFILES_DIR = REPO_ROOT / "profiles"


class RaySettings(Strict):
    """The local Ray head (platform local only)."""

    num_cpus: int | None = Field(None, ge=1, description="CPUs Ray may schedule on; null = all cores")
    gcs_port: int = Field(6390, ge=1024, le=65535)
    dashboard_port: int = Field(
        DASHBOARD_PORT, ge=1024, le=65535, description="bound to 127.0.0.1 and token-protected: the dashboard runs code"
    )
    metrics_port: int = Field(
        LOCAL_METRICS_PORT, ge=1024, le=65535,
        description="Ray's Prometheus metrics export (Ray's, Serve's and the app's metrics; docs/observability.md)",
    )  # fmt: skip


class Autoscaling(Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class DeploymentSettings(Strict):
    """Ray Serve deployment options of the model deployment."""

    num_replicas: int | None = Field(1, ge=1, description="fixed replicas; null when autoscaling is set")
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(16, ge=1, description="per replica; must cover one full batch")
    max_queued_requests: int = Field(32, ge=-1, description="beyond this, requests get a fast 503")
    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)
    health_check_period_s: float = Field(
        10, gt=0, le=600, description="how often Serve checks each replica: a dead one is replaced within about this"
    )

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentSettings:
        if self.autoscaling is not None and self.num_replicas is not None:
            raise ValueError("set either num_replicas or autoscaling, not both (use num_replicas: null)")
        if self.autoscaling is None and self.num_replicas is None:
            raise ValueError("set num_replicas or autoscaling")
        return self


class ServeSettings(Strict):
    host: str = Field("127.0.0.1", description="Serve HTTP bind address; 0.0.0.0 only inside a pod")
    http_port: int = Field(SERVE_PORT, ge=1, le=65535)
    request_timeout_s: float = Field(60, gt=0, description="the proxy answers 408 past this")
    app: AppArgs = AppArgs()
    deployment: DeploymentSettings = DeploymentSettings()

    @model_validator(mode="after")
    def _batch_fits(self) -> ServeSettings:
        batch = self.app.batching.max_batch_size
        if self.deployment.max_ongoing_requests < batch:
            raise ValueError(
                f"deployment.max_ongoing_requests ({self.deployment.max_ongoing_requests}) must be at "
                f"least app.batching.max_batch_size ({batch}), or batches can never fill"
            )
        if self.app.admission.always_admit > self.deployment.max_ongoing_requests:
            raise ValueError(
                f"app.admission.always_admit ({self.app.admission.always_admit}) exceeds "
                f"deployment.max_ongoing_requests ({self.deployment.max_ongoing_requests}): Serve would refuse first"
            )
        if self.app.device == "cpu" and self.deployment.num_gpus:
            raise ValueError("app.device is cpu but deployment.num_gpus > 0")
        return self


def _check_chart_fits(chart: ChartSettings, serve: ServeSettings) -> None:
    """Raise ValueError when the worker pods cannot hold the Serve replicas of `serve`."""
    d = serve.deployment
    replicas = d.autoscaling.max_replicas if d.autoscaling else (d.num_replicas or 1)
    w = chart.worker
    if d.num_gpus and not w.gpus:
        raise ValueError(f"serve.deployment.num_gpus is {d.num_gpus:g} but chart.worker.gpus is 0")
    if w.gpus and not d.num_gpus:
        raise ValueError("chart.worker.gpus > 0 but serve.deployment.num_gpus is 0: the GPUs would idle")
    per_pod = quantity(w.resources.limits.cpu) // d.num_cpus if d.num_cpus else replicas
    if d.num_gpus:
        per_pod = min(per_pod, w.gpus // d.num_gpus)
    if per_pod * w.max_replicas < replicas:
        raise ValueError(
            f"up to {replicas} Serve replica(s) need {d.num_cpus:g} CPU / {d.num_gpus:g} GPU each, but "
            f"{w.max_replicas} worker pod(s) with {w.resources.limits.cpu} CPU / {w.gpus} GPU hold "
            f"only {int(per_pod * w.max_replicas)}"
        )


class Profile(Strict):
    name: str
    description: str = ""
    platform: Literal["local", "kind", "eks"]
    ray: RaySettings = RaySettings()
    serve: ServeSettings = ServeSettings()
    training_config: str | None = Field(None, description="training/configs/<name>.yaml for this profile")
    cluster: ClusterSettings | None = Field(None, description="kind/eks cluster and add-ons")
    chart: ChartSettings | None = Field(None, description="Helm values of charts/dogbooth (kind, eks)")

    @model_validator(mode="after")
    def _chart_fits(self) -> Profile:
        if self.chart is not None:
            _check_chart_fits(self.chart, self.serve)
        return self

    @model_validator(mode="after")
    def _gpu_nodes_fit(self) -> Profile:
        # The three copies of "how many GPU workers" (Serve's max_replicas, the chart's worker
        # max_replicas, the GPU nodegroup's max_size) are tied: Serve against the chart above, the
        # chart against the nodegroup here. Each worker pod takes a whole single-GPU node.
        eks = self.cluster.eks if self.cluster else None
        if eks is not None and self.chart is not None and self.chart.worker.gpus:
            nodes, pods = eks.gpu_nodegroup.max_size, self.chart.worker.max_replicas
            if nodes < pods:
                raise ValueError(
                    f"cluster.eks.gpu_nodegroup.max_size ({nodes}) is below chart.worker.max_replicas ({pods}): "
                    "the GPU worker pods past it would stay Pending"
                )
        return self

    @model_validator(mode="after")
    def _cluster_fits_platform(self) -> Profile:
        check_platform(self.platform, self.cluster)
        return self

    @property
    def source(self) -> Path:
        return PROFILES_DIR / f"{self.name}.yaml"


def kind_settings(profile: Profile) -> KindSettings:
    if profile.cluster is None or profile.cluster.kind is None:
        raise ProfileError(f"{profile.source}: cluster.kind: missing")
    return profile.cluster.kind


def eks_settings(profile: Profile) -> EksSettings:
    if profile.cluster is None or profile.cluster.eks is None:
        raise ProfileError(f"{profile.source}: cluster.eks: missing")
    return profile.cluster.eks


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_file(path: Path) -> Profile:
    """Load and validate one profile file; errors name the file and the key."""
    data = read_mapping(path, ProfileError)
    if data.get("name", path.stem) != path.stem:
        raise ProfileError(f"{path}: name: {data.get('name')!r} must match the file name {path.stem!r}")
    data.setdefault("name", path.stem)
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(describe(path, e)) from e


def load(name: str) -> Profile:
    """Load `profiles/<name>.yaml`."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ProfileError(f"no profile {name!r} in {PROFILES_DIR}; available: {', '.join(available())}")
    return load_file(path)


def with_overrides(
    profile: Profile, *, model: str | None = None, port: int | None = None, adapters: Path | None = None
) -> Profile:
    """Apply command-line overrides, re-validating so they get the same checks as the file."""
    data = profile.model_dump()
    if model:
        try:
            ref = parse_model_ref(model)
        except ModelError as e:
            raise ProfileError(f"--model: {e}") from e
        # Replicas run elsewhere (another cwd, a pod): a relative path must not reach them.
        data["serve"]["app"]["model"] = ref.name if ref.kind == "local" else model
    if port:
        data["serve"]["http_port"] = port
    if adapters:  # absolute: the replicas run in another working directory
        data["serve"]["app"]["adapters"]["store"] = str(adapters.expanduser().resolve())
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(describe("command line", e)) from e
