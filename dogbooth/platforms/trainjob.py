"""Training in the cluster: the chart's training Job for a profile, rendered by the real Helm engine.

`render_job` builds the chart values from the profile (dogbooth.render.chart.chart_values), switches the
training Job on and renders the chart, keeping only templates/training-job.yaml. `submit` applies
it with kubectl and follows the pod's logs until the Job succeeds or fails.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import yaml

from dogbooth.core.errors import DogboothError
from dogbooth.core.names import MODEL_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.polling import poll
from dogbooth.core.tools import Runner, require
from dogbooth.core.yamlfile import dump_all
from dogbooth.platforms.kubesteps import kube_target
from dogbooth.render.chart import chart_values, render_manifests, settings
from dogbooth.render.k8svalidate import validate_k8s
from dogbooth.settings.profiles import Profile
from training import config as config_mod
from training.errors import TrainingError

log = logging.getLogger("dogbooth.training.cluster")

TEMPLATE = "templates/training-job.yaml"
to_yaml = dump_all  # commands/train.py prints the Job with it
# Flags of `dogbooth train` that the in-pod `python -m training` takes as they are.
PASS_THROUGH = (
    "instance_prompt",
    "base_model",
    "method",
    "max_train_steps",
    "seed",
    "checkpoint_every",
    "validate_every",
)


@dataclass(frozen=True)
class JobRequest:
    """What one cluster training run should do; every field has a profile-driven default."""

    run_name: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"))
    output_name: str = MODEL_NAME
    hub_repo: str | None = None
    instance_dir: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    image: str | None = None


def _config_path(profile: Profile) -> str:
    """The profile's training config, checked here so a typo fails before anything reaches the cluster."""
    if not profile.training_config:
        raise TrainingError(f"{profile.source}: training_config: missing; name a training/configs/*.yaml file")
    path = REPO_ROOT / profile.training_config
    config_mod.load(path)
    return profile.training_config


def training_values(profile: Profile, request: JobRequest) -> dict[str, Any]:
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in request.flags.items() if k in PASS_THROUGH and v is not None]
    if request.flags.get("prior_enabled") is False:  # a switch, not a --key=value: training/cli.py
        extra.append("--no-prior-preservation")
    values = chart_values(profile, image=request.image)
    values["training"] = {
        "enabled": True,
        "runName": request.run_name,
        "config": _config_path(profile),
        "outputName": request.output_name,
        "hubRepo": request.hub_repo or "",
        "instanceDir": request.instance_dir or "",
        "extraArgs": extra,
        # The Job runs where a Serve worker would: same GPU count, resources, tolerations and node selector.
        "gpus": values["worker"]["gpus"],
        "resources": values["worker"]["resources"],
    }
    return values


def render_job(profile: Profile, request: JobRequest) -> list[dict[str, Any]]:
    """The training Job (and, where the model cache is per-worker, its output claim), schema-validated."""

    if profile.platform == "local":
        raise TrainingError(f"profile {profile.name} is platform local: it trains in this process, not as a Job")
    rendered = render_manifests(training_values(profile, request), namespace=settings(profile).namespace)
    texts = [text for path, text in rendered.items() if path.endswith(TEMPLATE)]
    if not texts:
        raise TrainingError(f"the chart rendered no {TEMPLATE}; is training.enabled wired in the template?")
    objects = [doc for doc in yaml.safe_load_all(texts[0]) if doc]
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("namespace", settings(profile).namespace)
        validate_k8s(obj)
    return objects


def _job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] == "Job")


def submit(profile: Profile, objects: list[dict[str, Any]], *, follow: bool = True, timeout_s: float = 6 * 3600) -> str:
    """`kubectl apply` the Job, then stream its logs until it completes; returns the Job name."""

    require(["kubectl"], purpose=f"submitting the training Job of profile {profile.name}")
    job = _job(objects)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    kubectl = ["kubectl", *kube_target(profile).kubectl_args(), "--namespace", namespace]
    runner = Runner()
    runner.run(
        [*kubectl, "apply", "-f", "-"],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    log.info("submitted job/%s in namespace %s", name, namespace)
    if not follow:
        return name

    def settled() -> bool | None:
        # `logs -f` returns when the pod ends, or early while it is still Pending; poll until the Job settles.
        runner.run([*kubectl, "logs", "-f", f"job/{name}", "--pod-running-timeout=20m"], stream=True, ok_codes=(0, 1))
        status = _job_status(runner, kubectl, name)
        if status == "Failed":
            raise DogboothError(f"training job/{name} failed; see `kubectl -n {namespace} describe job/{name}`")
        return True if status == "Complete" else None

    # A training error, not a bring-up one: the stack is fine, the Job is just slow (and keeps running).
    poll(f"training job/{name} to complete", settled, timeout_s=timeout_s, interval_s=10, error=DogboothError,
         on_timeout=lambda: f"  - it keeps running: `kubectl -n {namespace} get job/{name}`")  # fmt: skip
    log.info("job/%s completed", name)
    return name


def _job_status(runner: Any, kubectl: list[str], name: str) -> str | None:
    out = runner.run([*kubectl, "get", f"job/{name}", "-o", "json"])
    for condition in json.loads(out).get("status", {}).get("conditions", []) or []:
        if condition.get("status") == "True" and condition.get("type") in {"Complete", "Failed"}:
            return str(condition["type"])
    return None
