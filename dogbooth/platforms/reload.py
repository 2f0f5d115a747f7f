"""Hot reload inside a Ray pod: what Tilt's live_update runs in every Ray container after syncing `services/`.

It is the local dev loop's restart (`dogbooth.platforms.local.deploy`; the dev loop reloads handler-only
edits in-process instead, services/hotswap.py): the app's runtime_env carries a code-revision value, so a
new value makes Serve build the app again (on the head) and start fresh replica processes (on the
workers), which import the files on their own disk. The config comes from
the running cluster (what KubeRay deployed from serveConfigV2), only that value changes, and it goes
straight to the head's Serve REST API: the RayService spec is untouched, so KubeRay neither restarts
the cluster nor creates a new RayCluster.

Tilt updates one container after the other, in an order that varies, and waits for each container's
step before it syncs the next one (docs/tilt.md). So the step cannot wait for the other containers:
every container's step redeploys, with a value no earlier deploy used, and waits only for its own
deploy. Whichever container Tilt updates last therefore deploys after every container has the new
files, and that deploy leaves every replica on the new code.

    python -m dogbooth.platforms.reload        # in the head and in every worker container
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from dogbooth.core.errors import BringUpError, DogboothError
from dogbooth.core.names import DASHBOARD_PORT, SERVE_PORT
from dogbooth.core.polling import poll
from dogbooth.platforms.serveclient import ServeClient, read_readyz
from dogbooth.render.serveconfig import APP_NAME, REVISION_ENV
from services.revision import SERVICES_DIR, code_revision

log = logging.getLogger("dogbooth.platforms.reload")

NODE_ENV = "DOGBOOTH_RAY_NODE"  # set by charts/dogbooth: head or worker (for the log only)
# KubeRay sets RAY_ADDRESS=<head>:<gcs port> in every Ray container: 127.0.0.1 on the head, the
# RayCluster's own head Service (<cluster>-head-svc.<namespace>.svc...) on a worker. That Service
# reaches this pod's own head, also while a second RayCluster of the RayService is coming up.
ADDRESS_ENV = "RAY_ADDRESS"
DEPLOY_TIMEOUT_S = 180.0  # a new replica loads the model again (from the cache volume)
SAMPLES_PER_REPLICA = 3  # /readyz goes through Serve's proxy to any replica: ask several times


@dataclass(frozen=True)
class Outcome:
    """What one container's step did: its files' revision, the value it deployed, what the replicas run."""

    revision: str
    deployed: str
    served: frozenset[str]  # revisions /readyz reported after the deploy was RUNNING; empty if superseded

    @property
    def complete(self) -> bool:
        return self.served == {self.revision}


def ray_token() -> str | None:
    """Ray's token, looked up the way Ray does: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token := os.environ.get("RAY_AUTH_TOKEN"):
        return token.strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return path.read_text().strip() if path.is_file() else None


def head_host(environ: Mapping[str, str] = os.environ) -> str:
    """The host of this pod's Ray head, from the RAY_ADDRESS KubeRay gives every Ray container."""
    address = environ.get(ADDRESS_ENV, "").removeprefix("ray://")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BringUpError(
            f"{ADDRESS_ENV}={address!r} is not <head host>:<port>; KubeRay sets it in every Ray container. "
            "Run this inside a pod of the dogbooth RayService (Tilt does)"
        )
    return host


def running_config(dashboard_url: str, token: str | None) -> dict[str, Any]:
    """The Serve config the cluster runs now, in the `serve deploy` schema."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.get(f"{dashboard_url}/api/serve/applications/", headers=headers, timeout=10)
    if not r.ok:
        raise BringUpError(f"GET {dashboard_url}/api/serve/applications/ -> {r.status_code}: {r.text[:300]}")
    details = r.json()
    apps = [a.get("deployed_app_config") for a in details.get("applications", {}).values()]
    if not apps or any(a is None for a in apps):
        raise BringUpError("Serve has no deployed app config yet; wait until the RayService is ready")
    http = details.get("http_options") or {}
    return {
        "proxy_location": details.get("proxy_location", "EveryNode"),
        "http_options": {k: http[k] for k in ("host", "port", "request_timeout_s") if k in http},
        "applications": apps,
    }


def with_revision(config: dict[str, Any], value: str) -> dict[str, Any]:
    """`config` with our app's code-revision env var set to `value` (other apps untouched)."""
    out = copy.deepcopy(config)
    apps = [a for a in out["applications"] if a.get("name") == APP_NAME]
    if len(apps) != 1:
        raise BringUpError(f"the running Serve config has {len(apps)} applications named {APP_NAME}, not one")
    env_vars = apps[0].setdefault("runtime_env", {}).setdefault("env_vars", {})
    env_vars[REVISION_ENV] = value
    return out


def deployed_value(app: dict[str, Any]) -> str | None:
    """The code-revision value of an application's details (`deployed_app_config`), if any."""
    config = app.get("deployed_app_config") or {}
    value = ((config.get("runtime_env") or {}).get("env_vars") or {}).get(REVISION_ENV)
    return str(value) if value is not None else None


def fresh_value(revision: str) -> str:
    """A value no earlier deploy used: Serve ignores a config whose runtime_env and args are unchanged,
    and the replicas must restart even when another container already deployed this revision."""
    return f"{revision}.{socket.gethostname()}.{secrets.token_hex(3)}"


def wait_deployed(client: ServeClient, value: str, *, timeout_s: float) -> dict[str, Any] | None:
    """Until our deploy (`value`) is RUNNING: its details. None when a later deploy replaced ours."""
    app: dict[str, Any] = {}

    def running() -> dict[str, Any] | bool | None:
        nonlocal app
        try:
            app = client.applications().get(APP_NAME, {})
        except requests.RequestException:  # the dashboard restarts a module under load; not fatal
            return None
        if not app:
            return None
        if deployed_value(app) != value:
            return False  # someone else's deploy is newer; it is theirs to wait for
        if app.get("status") == "DEPLOY_FAILED":
            raise BringUpError(f"application {APP_NAME} failed to deploy revision {value}:\n{app.get('message')}")
        return app if app.get("status") == "RUNNING" else None

    def why() -> str:
        return f"application {APP_NAME} is {app.get('status')}: {app.get('message') or '(no message)'}"

    result = poll(f"application {APP_NAME} to run {value}", running, timeout_s=timeout_s, interval_s=0.5,
                  on_timeout=why)  # fmt: skip
    return result if isinstance(result, dict) else None


def served_revisions(serve_url: str, samples: int, *, timeout_s: float = 60) -> frozenset[str]:
    """The code revisions `samples` answers of /readyz report (each from whichever replica Serve picks)."""
    seen: list[str] = []
    last = ["no answer"]

    def sampled() -> bool | None:
        while len(seen) < samples:
            body, last[0] = read_readyz(serve_url)
            if body is None:
                return None
            seen.append(str(body.get("revision")))
        return True

    poll(f"{serve_url}/readyz", sampled, timeout_s=timeout_s, interval_s=0.5, on_timeout=lambda: f"  - last: {last[0]}")
    return frozenset(seen)


def _replica_count(app: dict[str, Any]) -> int:
    return sum(len(d.get("replicas") or []) for d in (app.get("deployments") or {}).values())


def reload(
    dashboard_url: str,
    *,
    token: str | None = None,
    services_dir: Path = SERVICES_DIR,
    timeout_s: float = DEPLOY_TIMEOUT_S,
) -> Outcome:
    """Redeploy with a fresh value for the revision of `services_dir`; wait for that deploy only.

    Waiting for the other containers' files is not this step's business (Tilt syncs them after it
    returns): their own step redeploys. What the replicas serve afterwards is reported, not required.
    """
    revision = code_revision(services_dir)
    config = running_config(dashboard_url, token)
    serve_url = f"http://{urlsplit(dashboard_url).hostname}:{config['http_options'].get('port', SERVE_PORT)}"
    value = fresh_value(revision)
    client = ServeClient(dashboard_url, token)
    log.info("deploying code revision %s (as %s)", revision, value)
    client.deploy(with_revision(config, value))
    app = wait_deployed(client, value, timeout_s=timeout_s)
    if app is None:
        log.info("a later deploy replaced %s while it started; that one's step waits for it", value)
        return Outcome(revision, value, frozenset())
    served = served_revisions(serve_url, max(SAMPLES_PER_REPLICA, SAMPLES_PER_REPLICA * _replica_count(app)))
    return Outcome(revision, value, served)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth.platforms.reload: %(message)s", stream=sys.stderr)
    node = os.environ.get(NODE_ENV, "?")
    try:
        dashboard_url = f"http://{head_host()}:{DASHBOARD_PORT}"
        outcome = reload(dashboard_url, token=ray_token())
    except (DogboothError, requests.RequestException) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    if outcome.complete:
        log.info("%s: every replica serves code revision %s", node, outcome.revision)
    elif outcome.served:
        # Not an error: a container Tilt has not updated yet still has the old files; its step
        # (after this one) redeploys. Only if this was the last container do the files differ.
        others = ", ".join(sorted(outcome.served - {outcome.revision})) or "-"
        log.warning(
            "%s: replicas report %s, this container has %s: another pod's files differ; "
            "Tilt's step there redeploys (if this was the last container, that pod has other files: docs/tilt.md)",
            node, others, outcome.revision,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
