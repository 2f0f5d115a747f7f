"""Submitting the fine-tune Workflow (rendered by dogbooth.render.argo) and following it to the end."""

from __future__ import annotations

import json
import logging
from typing import Any

from dogbooth.core.polling import poll
from dogbooth.core.tools import Runner, require
from dogbooth.platforms.kubesteps import kube_target
from dogbooth.render.argo import PipelineError
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.argo")


def submit(profile: Profile, wf: dict[str, Any], *, follow: bool = True, timeout_s: float = 8 * 3600) -> str:
    """`kubectl create` the Workflow; with `follow`, print each step's phase until the Workflow ends."""

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
    shown: set[str] = set()

    def finished() -> bool | None:
        status = json.loads(runner.run([*kubectl, "get", f"workflow/{name}", "-o", "json"])).get("status") or {}
        for line in _node_lines(status):
            if line not in shown:
                shown.add(line)
                print(f"  {line}", flush=True)
        phase = status.get("phase")
        if phase in {"Failed", "Error"}:
            raise PipelineError(
                f"workflow/{name} {phase.lower()}: {status.get('message', '')}; "
                f"see `kubectl logs -l workflows.argoproj.io/workflow={name} --all-containers`"
            )
        return True if phase == "Succeeded" else None

    poll(f"workflow/{name} to succeed", finished, timeout_s=timeout_s, interval_s=poll_s, error=PipelineError,
         on_timeout=lambda: "  - it keeps running")  # fmt: skip
