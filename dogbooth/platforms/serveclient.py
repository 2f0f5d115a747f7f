"""A small client for Ray's Serve REST API (`/api/serve/applications/`) and the app's `/readyz`.

Used for every Ray we deploy to from the host. Failures become BringUpError with what Serve said.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from dogbooth.core.errors import BringUpError
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
        deadline = time.monotonic() + retry_s
        while True:
            try:
                r = requests.put(f"{self.url}/api/serve/applications/", json=config, headers=self.headers, timeout=60)
                if r.ok:
                    return
                if r.status_code < 500 or time.monotonic() > deadline:
                    raise BringUpError(f"Serve rejected the config ({r.status_code}): {r.text[:2000]}")
            except requests.RequestException as e:
                if time.monotonic() > deadline:
                    raise BringUpError(f"the Ray dashboard at {self.url} is unreachable: {e}") from e
            time.sleep(1)

    def applications(self) -> dict[str, Any]:
        r = requests.get(f"{self.url}/api/serve/applications/", headers=self.headers, timeout=10)
        if not r.ok:
            raise BringUpError(f"Serve status failed ({r.status_code}): {r.text[:500]}")
        apps: dict[str, Any] = r.json().get("applications", {})
        return apps

    def wait_running(self, *, timeout_s: float, log_hint: str = "") -> None:
        """Until the app is RUNNING; raise with Serve's own message when it fails or stalls."""
        deadline, last = time.monotonic() + timeout_s, ""
        while True:
            try:
                app = self.applications().get(APP_NAME, {})
            except requests.RequestException:  # the dashboard restarts a module under load; not fatal
                app = {"status": last or "UNREACHABLE"}
            status = app.get("status", "NOT_STARTED")
            if status != last:
                log.info("application %s: %s", APP_NAME, status)
                last = status
            if status == "RUNNING":
                return
            if status == "DEPLOY_FAILED" or time.monotonic() > deadline:
                message = app.get("message") or _deployment_messages(app)
                raise BringUpError(
                    f"application {APP_NAME} is {status} after {timeout_s:.0f}s budget:\n{message}\n"
                    f"(Ray logs: {log_hint}/session_latest/logs)"
                )
            time.sleep(0.5)

    def wait_ready(self, endpoint_base: str, revision: str | None, *, timeout_s: float) -> None:
        """Until `/readyz` answers 200, from the expected code revision when one is given."""
        deadline = time.monotonic() + timeout_s
        seen = "no answer"
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{endpoint_base}/readyz", timeout=5)
                if r.ok and (revision is None or r.json().get("revision") == revision):
                    return
                seen = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                seen = type(e).__name__
            time.sleep(0.3)
        raise BringUpError(f"{endpoint_base}/readyz not ready (revision {revision}) in {timeout_s:.0f}s: {seen}")


def _deployment_messages(app: dict[str, Any]) -> str:
    deployments = app.get("deployments", {})
    lines = [f"{name}: {d.get('status')} {d.get('message', '')}" for name, d in deployments.items()]
    return "\n".join(lines) or "(no deployment status yet)"
