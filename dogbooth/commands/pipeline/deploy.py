"""The deploy step: serve the new model, and wait until `/readyz` reports it.

Local: `dogbooth.platforms.local.up` with the profile's model swapped for the export (an update in place when
the profile is already up). Cluster: the WorkflowTemplate patches the RayService's serveConfigV2
(an Argo resource step) and then runs `wait_ready` against the Serve Service from inside the cluster.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import requests

from dogbooth.core.errors import BringUpError
from dogbooth.platforms import local
from dogbooth.settings.profiles import Profile, with_overrides

log = logging.getLogger("dogbooth.commands.pipeline.deploy")


def wait_ready(readyz_url: str, model: str, *, timeout_s: float = 1800, interval_s: float = 5) -> dict[str, object]:
    """Poll `/readyz` until it answers 200 with `model` (the RayService has switched); return its body."""
    deadline, seen = time.monotonic() + timeout_s, "no answer yet"
    while time.monotonic() < deadline:
        try:
            r = requests.get(readyz_url, timeout=10)
            if r.ok and r.json().get("model") == model:
                log.info("deploy: %s serves %s", readyz_url, model)
                body: dict[str, object] = r.json()
                return body
            seen = f"{r.status_code} {r.text[:200]}"
        except (requests.RequestException, ValueError) as e:
            seen = str(e)
        time.sleep(interval_s)
    raise BringUpError(f"{readyz_url} did not report model {model} within {timeout_s:.0f}s (last: {seen})")


def deploy_local(profile: Profile, export_dir: Path, *, timeout_s: float = 300) -> str:
    """Serve `export_dir` on the local profile (starting it when down); returns the /imagine URL."""

    served = with_overrides(profile, model=str(export_dir.resolve()))
    endpoint = local.up(served, timeout_s=timeout_s)
    base = endpoint.removesuffix("/imagine")
    wait_ready(f"{base}/readyz", served.serve.app.model, timeout_s=timeout_s, interval_s=0.5)
    return endpoint
