"""A small client for Ray's Serve REST API (`/api/serve/applications/`) and the app's `/readyz`.

Used for every Ray we deploy to from the host. Failures become BringUpError with what Serve said.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from dogbooth.core.errors import BringUpError
from dogbooth.core.polling import poll
from dogbooth.render.serveconfig import APP_NAME

log = logging.getLogger("dogbooth.serve")


class ServeClient:
    def __init__(self, dashboard_url: str, token: str | None = None) -> None:
        self.url = dashboard_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def dashboard_up(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/version", headers=self.headers, timeout=2).ok
        except requests.RequestException:
            return False

    def deploy(self, config: dict[str, Any], *, retry_s: float = 60) -> None:
        """PUT the config. Retries while the dashboard's Serve module is still starting (it comes up
        after the dashboard itself answers) or drops the connection under load."""
        log.info("PUT %s/api/serve/applications/ (app %s)", self.url, APP_NAME)
        last = ["no answer yet"]

        def accepted() -> bool | None:
            try:
                r = requests.put(f"{self.url}/api/serve/applications/", json=config, headers=self.headers, timeout=60)
            except requests.RequestException as e:
                last[0] = f"the Ray dashboard is unreachable: {e}"
                return None
            if r.ok:
                return True
            if r.status_code < 500:  # the config itself is wrong: retrying cannot help
                raise BringUpError(f"Serve rejected the config ({r.status_code}): {r.text[:2000]}")
            last[0] = f"Serve answered {r.status_code}: {r.text[:2000]}"
            return None

        poll(f"Serve at {self.url} to accept the config", accepted, timeout_s=retry_s, interval_s=1,
             on_timeout=lambda: f"  - last: {last[0]}")  # fmt: skip

    def applications(self) -> dict[str, Any]:
        r = requests.get(f"{self.url}/api/serve/applications/", headers=self.headers, timeout=10)
        if not r.ok:
            raise BringUpError(f"Serve status failed ({r.status_code}): {r.text[:500]}")
        apps: dict[str, Any] = r.json().get("applications", {})
        return apps

    def wait_running(self, *, timeout_s: float, log_hint: str = "", app_name: str = APP_NAME) -> None:
        """Until the app is RUNNING; raise with Serve's own message when it fails or stalls."""
        app: dict[str, Any] = {}

        def why() -> str:
            message = app.get("message") or _deployment_messages(app)
            status = app.get("status")
            return f"application {app_name} is {status}:\n{message}\n(Ray logs: {log_hint}/session_latest/logs)"

        def running() -> bool | None:
            nonlocal app
            before = app.get("status")
            try:
                app = self.applications().get(app_name, {})
            except requests.RequestException:  # the dashboard restarts a module under load; not fatal
                app = {"status": before or "UNREACHABLE"}
            status = app.setdefault("status", "NOT_STARTED")
            if status != before:
                log.info("application %s: %s", app_name, status)
            if status == "DEPLOY_FAILED":
                raise BringUpError(why())
            return True if status == "RUNNING" else None

        poll(f"application {app_name} to be RUNNING", running, timeout_s=timeout_s, interval_s=0.5, on_timeout=why)

    def wait_ready(self, endpoint_base: str, revision: str | None, *, timeout_s: float) -> None:
        """Until `/readyz` answers 200, from the expected code revision when one is given."""
        seen = ["no answer"]

        def ready() -> bool | None:
            body, seen[0] = read_readyz(endpoint_base)
            return True if body is not None and (revision is None or body.get("revision") == revision) else None

        poll(f"{endpoint_base}/readyz to be ready (revision {revision})", ready, timeout_s=timeout_s, interval_s=0.3,
             on_timeout=lambda: f"  - last: {seen[0]}")  # fmt: skip


def read_readyz(endpoint_base: str) -> tuple[dict[str, Any] | None, str]:
    """One GET of `/readyz`: its body when 200 (else None), and what answered, for a timeout's message."""
    try:
        r = requests.get(f"{endpoint_base}/readyz", timeout=5)
    except requests.RequestException as e:
        return None, type(e).__name__
    answered = f"{r.status_code} {r.text[:200]}"
    return (r.json(), answered) if r.ok else (None, answered)


def _deployment_messages(app: dict[str, Any]) -> str:
    deployments = app.get("deployments", {})
    lines = [f"{name}: {d.get('status')} {d.get('message', '')}" for name, d in deployments.items()]
    return "\n".join(lines) or "(no deployment status yet)"
