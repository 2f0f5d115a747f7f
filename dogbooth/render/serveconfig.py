"""The Ray Serve config (the `serve deploy` schema) generated from a profile.

`serve_config()` is the single source: the local bring-up PUTs it to the Serve REST API, and the
chart embeds the very same object as the RayService's `serveConfigV2`.
"""

from __future__ import annotations

from typing import Any

from dogbooth.settings.profiles import Profile
from services.schemas import DEPLOYMENT_NAME

APP_NAME = "dogbooth"
IMPORT_PATH = "services.entry:build_app"  # re-imports services/ on each build
REVISION_ENV = "DOGBOOTH_CODE_REVISION"


def _deployment(profile: Profile) -> dict[str, Any]:
    d = profile.serve.deployment
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.max_queued_requests,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        "health_check_period_s": d.health_check_period_s,
    }
    if d.autoscaling is not None:
        options["autoscaling_config"] = d.autoscaling.model_dump()
    else:
        options["num_replicas"] = d.num_replicas
    return options


def serve_config(profile: Profile, code_revision: str = "image") -> dict[str, Any]:
    """The whole Serve config for `profile`.

    `code_revision` lands in the app's runtime_env. Changing it makes Ray start fresh worker
    processes, which import the serve code anew: that is how the dev loop and Tilt hot-reload
    without restarting Ray or creating a new RayCluster.
    """
    serve = profile.serve
    return {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": serve.host,
            "port": serve.http_port,
            "request_timeout_s": serve.request_timeout_s,
        },
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "runtime_env": {"env_vars": {REVISION_ENV: code_revision}},
                "args": serve.app.model_dump(mode="json"),
                "deployments": [_deployment(profile)],
            }
        ],
    }
