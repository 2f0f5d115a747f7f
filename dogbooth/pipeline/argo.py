"""The pipeline on a cluster: the chart's WorkflowTemplate `dogbooth-finetune`, and Workflows that run it.

`workflow_values` is the profile -> `workflow:` chart values hop (called by dogbooth.chart.chart_values);
`workflow` builds the Workflow that `python -m dogbooth pipeline --profile eks|kind-*` submits with
kubectl, and `submit` follows it until it succeeds or fails.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import yaml

from dogbooth.errors import DogboothError
from dogbooth.pipeline.score import DEFAULT_SCORER, default_threshold
from dogbooth.profiles import Profile

log = logging.getLogger("dogbooth.pipeline.argo")

TEMPLATE_NAME = "dogbooth-finetune"
ARGO_NAMESPACE = "argo"
ARGO_CHART_VERSION = "2.0.1"  # argoproj/argo-helm argo-workflows, appVersion v4.1.0
ARGO_VERSION = "v4.1.2"  # images pinned to the release whose CRDs the tests use (../shared/argo-crds)


class PipelineError(DogboothError):
    """The Workflow could not be submitted, or it failed; the message says which step and where to look."""


@dataclass(frozen=True)
class SubmitRequest:
    """Workflow parameters; None/"" keeps the WorkflowTemplate's default."""

    base_model: str | None = None
    instance_dir: str | None = None
    steps: int | None = None
    threshold: float | None = None
    scorer: str = DEFAULT_SCORER
    output_name: str = "dogbooth-model"
    hub_repo: str = ""


def enabled(profile: Profile) -> bool:
    return bool(profile.cluster and profile.cluster.addons.argo_workflows)


def workflow_values(profile: Profile) -> dict[str, Any]:
    """`workflow:` chart values: on where the profile installs Argo; train and validate get a worker's shape."""
    w = profile.chart.worker if profile.chart else None
    values: dict[str, Any] = {"enabled": enabled(profile)}
    if w is not None:
        values.update(
            {
                "config": profile.training_config or "training/configs/local.yaml",
                "threshold": str(default_threshold(DEFAULT_SCORER)),
                "gpus": w.gpus,
                "resources": w.resources.model_dump(),
                "tolerations": [t.model_dump(exclude_none=True) for t in w.tolerations],
                "nodeSelector": dict(w.node_selector),
            }
        )
    return values


def argo_release_values(profile: Profile, namespace: str, system_pool: dict[str, str]) -> dict[str, Any]:
    """Values of the argo-workflows chart: the controller watches our namespace, the UI stays internal."""
    placement = {"nodeSelector": system_pool} if system_pool else {}
    return {
        "images": {"tag": ARGO_VERSION},
        "crds": {"install": True, "keep": True},  # keep: deleting the release must not delete Workflows
        "controller": {"workflowNamespaces": [namespace], **placement},
        # The UI/API server: ClusterIP only, each user brings their own kube token (client auth mode).
        "server": {"authModes": ["client"], "serviceType": "ClusterIP", **placement},
        "workflow": {"serviceAccount": {"create": False}, "rbac": {"create": False}},  # our chart makes them
    }


def workflow(profile: Profile, request: SubmitRequest) -> dict[str, Any]:
    """A Workflow running the WorkflowTemplate with `request`'s parameters."""
    if not enabled(profile):
        raise PipelineError(
            f"profile {profile.name}: cluster.addons.argo_workflows is false, so the cluster has no "
            "Argo Workflows and the chart no WorkflowTemplate; set it to true and run `up` again"
        )
    namespace = profile.chart.namespace if profile.chart else "dogbooth"
    threshold = request.threshold if request.threshold is not None else default_threshold(request.scorer)
    given = {
        "base-model": request.base_model or "",
        "instance-dir": request.instance_dir or "",
        "steps": str(request.steps or ""),
        "threshold": str(threshold),
        "scorer": request.scorer,
        "output-name": request.output_name,
        "hub-repo": request.hub_repo,
    }
    parameters = [{"name": k, "value": v} for k, v in given.items() if v != ""]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"{TEMPLATE_NAME}-", "namespace": namespace},
        "spec": {"workflowTemplateRef": {"name": TEMPLATE_NAME}, "arguments": {"parameters": parameters}},
    }


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def submit(profile: Profile, wf: dict[str, Any], *, follow: bool = True, timeout_s: float = 8 * 3600) -> str:
    """`kubectl create` the Workflow; with `follow`, print each step's phase until the Workflow ends."""
    from dogbooth.cluster import kube_target
    from dogbooth.tools import Runner, require

    require(["kubectl"], purpose=f"submitting the fine-tune Workflow of profile {profile.name}")
    namespace = wf["metadata"]["namespace"]
    kubectl = ["kubectl", *kube_target(profile).kubectl_args(), "--namespace", namespace]
    runner = Runner()
    name = runner.run([*kubectl, "create", "-f", "-", "-o", "name"], input=json.dumps(wf)).strip()
    name = name.rpartition("/")[2]
    log.info("submitted workflow/%s in namespace %s", name, namespace)
    if follow:
        follow_workflow(runner, kubectl, name, timeout_s=timeout_s)
    return name


def _node_lines(status: dict[str, Any]) -> list[str]:
    nodes = [n for n in (status.get("nodes") or {}).values() if n.get("type") == "Pod"]
    nodes.sort(key=lambda n: n.get("startedAt") or "")
    return [f"{n.get('displayName')}: {n.get('phase')} {n.get('message') or ''}".rstrip() for n in nodes]


def follow_workflow(runner: Any, kubectl: list[str], name: str, *, timeout_s: float, poll_s: float = 10) -> None:
    """Print step phases as they change; raise PipelineError when the Workflow fails or times out."""
    deadline, shown = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline:
        status = json.loads(runner.run([*kubectl, "get", f"workflow/{name}", "-o", "json"])).get("status") or {}
        for line in _node_lines(status):
            if line not in shown:
                shown.add(line)
                print(f"  {line}", flush=True)
        phase = status.get("phase")
        if phase == "Succeeded":
            return
        if phase in {"Failed", "Error"}:
            raise PipelineError(
                f"workflow/{name} {phase.lower()}: {status.get('message', '')}; "
                f"see `kubectl logs -l workflows.argoproj.io/workflow={name} --all-containers`"
            )
        time.sleep(poll_s)
    raise PipelineError(f"workflow/{name} still running after {timeout_s:.0f}s; it keeps running")
