"""Hot reload inside a Ray head pod: what Tilt's live_update runs after syncing `services/`.

It is the local dev loop's mechanism (`dogbooth.platforms.local.deploy`): the app's runtime_env carries the
code revision, so a new revision makes Serve start fresh replica processes that import the synced
files. The config comes from the running cluster (what KubeRay deployed from serveConfigV2), only
the revision changes, and it goes straight to the head's Serve REST API: the RayService spec is
untouched, so KubeRay neither restarts the cluster nor creates a new RayCluster.

    python -m dogbooth.platforms.reload        # in the head container; a no-op in worker containers
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from pathlib import Path
from typing import Any

import requests

from dogbooth.core.errors import BringUpError, DogboothError
from dogbooth.core.names import DASHBOARD_PORT, SERVE_PORT
from dogbooth.platforms.serveclient import ServeClient
from dogbooth.render.serveconfig import APP_NAME, REVISION_ENV
from services.revision import SERVICES_DIR, code_revision

log = logging.getLogger("dogbooth.platforms.reload")

NODE_ENV = "DOGBOOTH_RAY_NODE"  # set by charts/dogbooth: head or worker
DASHBOARD_URL = f"http://127.0.0.1:{DASHBOARD_PORT}"
ATTEMPTS = 3


def ray_token() -> str | None:
    """Ray's token, looked up the way Ray does: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token := os.environ.get("RAY_AUTH_TOKEN"):
        return token.strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return path.read_text().strip() if path.is_file() else None


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


def with_revision(config: dict[str, Any], revision: str) -> dict[str, Any]:
    """`config` with our app's code-revision env var set to `revision` (other apps untouched)."""
    out = copy.deepcopy(config)
    (app,) = [a for a in out["applications"] if a.get("name") == APP_NAME]
    env_vars = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
    env_vars[REVISION_ENV] = revision
    return out


def reload(dashboard_url: str = DASHBOARD_URL, *, services_dir: Path = SERVICES_DIR, timeout_s: float = 180) -> str:
    """Redeploy with the revision of `services_dir`; return it once /readyz serves it.

    Tilt syncs each pod in turn, so a replica on a worker can start before that worker has the new
    files. It then reports the old revision; a second deploy with a fresh nonce restarts it.
    """
    token = ray_token()
    revision = code_revision(services_dir)
    config = running_config(dashboard_url, token)
    http = config["http_options"]
    endpoint = f"http://127.0.0.1:{http.get('port', SERVE_PORT)}"
    client = ServeClient(dashboard_url, token)
    for attempt in range(ATTEMPTS):
        nonce = revision if attempt == 0 else f"{revision}.{attempt}"
        log.info("deploying code revision %s", nonce)
        client.deploy(with_revision(config, nonce))
        client.wait_running(timeout_s=timeout_s, log_hint="/tmp/ray")
        try:
            client.wait_ready(endpoint, revision, timeout_s=timeout_s / ATTEMPTS)
            return revision
        except BringUpError as e:
            log.warning("replicas still serve older code (%s); redeploying", e)
    raise BringUpError(f"revision {revision} not served after {ATTEMPTS} deploys; see the worker pods' sync")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth.platforms.reload: %(message)s", stream=sys.stderr)
    if os.environ.get(NODE_ENV) != "head":
        log.info("%s=%s: files synced; the head pod redeploys", NODE_ENV, os.environ.get(NODE_ENV))
        return 0
    try:
        revision = reload()
    except DogboothError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    log.info("serving code revision %s", revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
