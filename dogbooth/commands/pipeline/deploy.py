"""The deploy step: serve the new model, and wait until `/readyz` reports it.

Local: `dogbooth.platforms.local.up` with the profile's model swapped for the export (an update in place when
the profile is already up). Cluster: the WorkflowTemplate patches the RayService's serveConfigV2
(an Argo resource step) and then runs `wait_ready` against the Serve Service from inside the cluster.
"""

from __future__ import annotations

import logging
from pathlib import Path

import requests

from dogbooth.core.polling import poll
from dogbooth.platforms import local
from dogbooth.settings.profiles import Profile, with_overrides

log = logging.getLogger("dogbooth.commands.pipeline.deploy")


def wait_ready(readyz_url: str, model: str, *, timeout_s: float = 1800, interval_s: float = 5) -> dict[str, object]:
    """Poll `/readyz` until it answers 200 with `model` (the RayService has switched); return its body."""
    seen = ["no answer yet"]

    def serving() -> dict[str, object] | None:
        try:
            r = requests.get(readyz_url, timeout=10)
            if r.ok and r.json().get("model") == model:
                body: dict[str, object] = r.json()
                return body
            seen[0] = f"{r.status_code} {r.text[:200]}"
        except (requests.RequestException, ValueError) as e:
            seen[0] = str(e)
        return None

    body = poll(f"{readyz_url} to report model {model}", serving, timeout_s=timeout_s, interval_s=interval_s,
                on_timeout=lambda: f"  - last: {seen[0]}")  # fmt: skip
    log.info("deploy: %s serves %s", readyz_url, model)
    return body


def deploy_local(profile: Profile, export_dir: Path, *, timeout_s: float = 300) -> str:
    """Serve `export_dir` on the local profile (starting it when down); returns the /imagine URL."""

    served = with_overrides(profile, model=str(export_dir.resolve()))
    endpoint = local.up(served, timeout_s=timeout_s)
    base = endpoint.removesuffix("/imagine")
    wait_ready(f"{base}/readyz", served.serve.app.model, timeout_s=timeout_s, interval_s=0.5)
    return endpoint
