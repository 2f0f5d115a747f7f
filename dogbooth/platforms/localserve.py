"""How the local platform deploys serve code and knows it answers: the Serve config with the code's
revision in two places (restart or in-process reload, services/hotswap.py) and a fingerprint of the
config, the wait for /readyz to answer from both and for Serve to run no replica of an earlier deploy,
and the bring-up phases the replica reports (`up --timings`)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from dogbooth.core.errors import BringUpError
from dogbooth.core.polling import poll
from dogbooth.platforms.serveclient import ServeClient, read_readyz
from dogbooth.render.serveconfig import APP_NAME, serve_config
from dogbooth.settings.profiles import Profile
from services import hotswap
from services.revision import code_revision


class ReloadFailed(BringUpError):
    """The replicas could not take the edited code in-process; they serve the previous code."""


# Deployment options that size the deployment, not what one replica serves: left out of the fingerprint,
# so that `up`'s surge (one replica more, then the profile's count) stays a pure scale (Serve neither
# restarts nor reconfigures the replicas that run) and a replica's fingerprint says which args it runs.
_SIZING = ("num_replicas", "autoscaling_config")


def config_for(profile: Profile, restart: str, revision: str) -> dict[str, Any]:
    """The profile's Serve config. A new `restart` (the runtime_env's value) restarts the replicas; a
    new `revision` in user_config alone makes them reload the handler code in-process (services/hotswap.py).

    user_config also carries a fingerprint of the config (`fingerprint`): the app's args, runtime_env
    and deployment options but the replica count. Each replica echoes it in /readyz: a new model or
    new options keep the code revision, so the revision alone cannot tell the replicas of this
    deploy from those of the deploy before."""
    config = serve_config(profile, restart)
    for app in config["applications"]:
        for deployment in app["deployments"]:
            deployment["user_config"] = {hotswap.REVISION_KEY: revision}
    served = copy.deepcopy(config)
    for app in served["applications"]:
        for deployment in app["deployments"]:
            for key in _SIZING:
                deployment.pop(key, None)
    digest = hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:16]
    for app in config["applications"]:
        for deployment in app["deployments"]:
            deployment["user_config"][hotswap.CONFIG_KEY] = digest
    return config


def fingerprint(config_or_app: dict[str, Any]) -> str | None:
    """The fingerprint `config_for` put in a config, or in an application's details (`deployed_app_config`)."""
    apps = config_or_app.get("applications") or [config_or_app.get("deployed_app_config") or {}]
    for deployment in apps[0].get("deployments") or []:
        if value := (deployment.get("user_config") or {}).get(hotswap.CONFIG_KEY):
            return str(value)
    return None


def _all_replicas_current(app: dict[str, Any], config: dict[str, Any]) -> bool:
    """Every deployment HEALTHY, with only RUNNING replicas, as many as `config` asks for. Checked as
    well as the app's status because, right after a deploy that only scales, that status can still be
    the previous deploy's for one turn of Serve's control loop."""
    counts = {d["name"]: d.get("num_replicas") for d in config["applications"][0]["deployments"]}
    for name, details in (app.get("deployments") or {}).items():
        replicas = details.get("replicas") or []
        if details.get("status") != "HEALTHY" or any(r.get("state") != "RUNNING" for r in replicas):
            return False
        if counts.get(name) is not None and len(replicas) != counts[name]:
            return False
    return True


def settled(client: ServeClient, config: dict[str, Any]) -> Callable[[], bool]:
    """A check: True once Serve reports `config` (by its fingerprint) RUNNING, which it does only when
    no replica is starting, reconfiguring or stopping and every running one is of that config's
    version (ray/serve/_private/deployment_state.py `check_curr_status`): no replica of an earlier
    deploy still takes requests. Raises once Serve reports this config failed. It asks at most every
    0.25 s; `wait_serving` asks only once /readyz answered from the config."""
    wanted, due = fingerprint(config), [0.0]

    def check() -> bool:
        if time.monotonic() < due[0]:
            return False
        due[0] = time.monotonic() + 0.25
        try:
            app = client.applications().get(APP_NAME) or {}
        except requests.RequestException:  # the dashboard drops a request under load; ask again
            return False
        if fingerprint(app) != wanted:
            return False
        if app.get("status") == "DEPLOY_FAILED":
            raise BringUpError(f"application {APP_NAME} failed to deploy config {wanted}:\n{app.get('message')}")
        return app.get("status") == "RUNNING" and _all_replicas_current(app, config)

    return check


def failed_deploy(client: ServeClient, wanted: str) -> Callable[[], None]:
    """A check that raises once Serve reports our deploy (the config with fingerprint `wanted`) failed.
    It asks at most once a second: /readyz, polled faster, usually answers before Serve's status does."""
    due = [0.0]

    def check() -> None:
        if time.monotonic() < due[0]:
            return
        due[0] = time.monotonic() + 1
        with contextlib.suppress(requests.RequestException):
            app = client.applications().get(APP_NAME) or {}
            if fingerprint(app) == wanted and app.get("status") == "DEPLOY_FAILED":
                raise BringUpError(f"application {APP_NAME} failed to deploy config {wanted}:\n{app.get('message')}")

    return check


def wait_serving(
    endpoint_base: str,
    source_root: Path,
    revision: str,
    *,
    timeout_s: float,
    config: str,
    done: Callable[[], bool],
    in_process: bool = False,
    failed: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Until /readyz answers from the config with fingerprint `config` and from `revision` (or from the
    files as they are now when they changed again since: the replicas build from disk), and `done`
    (`settled`) says no replica of an earlier deploy remains: the last /readyz body. `in_process`:
    ReloadFailed once the replica reports it could not take the revision (during a restart, an old
    replica's report is stale: not checked)."""
    last = ["no answer"]
    services = source_root / "services"

    def serving() -> dict[str, Any] | None:
        failed()
        body, last[0] = read_readyz(endpoint_base)
        if body is None:
            return None
        swap = body.get("reload") or {}
        if in_process and body.get("revision") != revision and swap.get("wanted") == revision and swap.get("error"):
            raise ReloadFailed(f"revision {revision} did not load: {swap['error']}")
        last[0] = f"revision {body.get('revision')}, config {swap.get(hotswap.CONFIG_KEY)}"
        if swap.get(hotswap.CONFIG_KEY) != config or body.get("revision") not in (revision, code_revision(services)):
            return None
        last[0] += "; Serve still updates replicas"
        return body if done() else None

    return poll(f"{endpoint_base}/readyz to answer from revision {revision}, config {config}", serving,
                timeout_s=timeout_s, interval_s=0.1, on_timeout=lambda: f"  - last: {last[0]}")  # fmt: skip


def replica_phases(body: dict[str, Any], put_at: float) -> dict[str, float]:
    """`up --timings`'s phases from the PUT on, from what the replica reports of its start-up."""
    answered, startup = time.time(), body.get("startup") or {}
    init = float(startup.get("init_started_at", 0))
    if init < put_at:  # the replica was already serving this code: nothing started
        return {"Serve deploy (nothing to restart)": answered - put_at}
    parts = {"replica import (torch, diffusers)": "import_s", "model load": "load_s", "warm-up": "warm_up_s"}
    phases = {"Serve deploy (controller, build, worker)": init - put_at}
    phases.update({name: float(startup.get(key, 0)) for name, key in parts.items()})
    phases["first 200 (rest of init, routing)"] = answered - init - sum(phases[name] for name in parts)
    return phases
