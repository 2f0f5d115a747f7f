"""The pipeline on a cluster: the chart's WorkflowTemplate `dogbooth-finetune`, and Workflows that run it.

`workflow_values` is the profile -> `workflow:` chart values hop (called by dogbooth.render.chart.chart_values);
`workflow` builds the Workflow that `python -m dogbooth pipeline --profile eks|kind-*` submits with
kubectl, and `submit` follows it until it succeeds or fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import yaml

from dogbooth.core.errors import DogboothError
from dogbooth.core.names import MODEL_NAME, NAMESPACE
from dogbooth.settings.gate import DEFAULT_SCORER, default_threshold
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.render.argo")

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
    output_name: str = MODEL_NAME
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
                "scorer": DEFAULT_SCORER,
                "outputName": MODEL_NAME,
                "gpus": w.gpus,
                "runtimeClassName": w.runtime_class_name or "",
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
    namespace = profile.chart.namespace if profile.chart else NAMESPACE
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
