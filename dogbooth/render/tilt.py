"""Everything the Tiltfile needs, from the profile: `python -m dogbooth tilt-config --profile P` prints it.

The Tiltfile stays a short list of Tilt calls; every name, port, path and manifest it uses comes
from here, so it cannot drift from the profile, the chart or the image build.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dogbooth.core.names import DASHBOARD_PORT, RELEASE_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.render.chart import render_stdout, settings
from dogbooth.render.image import APP_DIR, DOCKERFILE, IMAGE_CONTEXT, LIVE_SYNC
from dogbooth.settings.profiles import Profile, kind_settings

RESOURCE = "dogbooth"  # the Tilt resource that groups our objects
# Where Tilt finds the images inside the RayService (it only knows Deployments' paths itself).
RAYSERVICE_IMAGE_PATHS = (
    "{.spec.rayClusterConfig.headGroupSpec.template.spec.containers[*].image}",
    "{.spec.rayClusterConfig.workerGroupSpecs[*].template.spec.containers[*].image}",
)
RELOAD_COMMAND = "python -m dogbooth.platforms.reload"  # in the pods: the image's Python
FORWARD_MODULE = "dogbooth.platforms.forward"  # waits for the Service, restarts kubectl port-forward
ROLL_MODULE = "dogbooth.platforms.roll"  # upgradeStrategy None: moves the RayCluster to a rebuilt image


def _forward(profile: Profile, name: str, service: str, port: int) -> dict[str, Any]:
    """A Tilt serve_cmd that forwards 127.0.0.1:<port> to a Service KubeRay makes for the RayService.

    The interpreter is the one running this: the Tiltfile runs tilt-config with its DOGBOOTH_PYTHON,
    so the forward runs in the project's environment too. Tilt never restarts a serve_cmd that exits;
    the module does that itself (docs/tilt.md).
    """
    argv = [sys.executable, "-m", FORWARD_MODULE, "--context", kind_settings(profile).context]
    argv += ["--namespace", settings(profile).namespace, "--service", f"{RELEASE_NAME}-{service}", "--port", str(port)]
    return {"name": f"{name}-{port}", "port": port, "cmd": argv}


def _watchers(profile: Profile) -> list[dict[str, Any]]:
    """Long-running helpers beside the app: under upgradeStrategy None, the roll (docs/kind.md)."""
    if settings(profile).upgrade_strategy != "None":
        return []
    context = kind_settings(profile).context
    argv = [sys.executable, "-m", ROLL_MODULE, "--context", context, "--namespace", settings(profile).namespace]
    return [{"name": "roll", "cmd": [*argv, "--watch"]}]


def tilt_config(profile: Profile) -> dict[str, Any]:
    """The Tiltfile's inputs for a kind profile, as plain JSON-able data."""
    chart = settings(profile)
    namespace_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": chart.namespace}}
    rendered = render_stdout(profile)
    manifests = yaml.safe_dump(namespace_doc, sort_keys=False) + "---\n" + rendered
    objects = [f"{chart.namespace}:namespace"] + [
        f"{o['metadata']['name']}:{o['kind'].lower()}"
        for o in yaml.safe_load_all(rendered)
        if o and o["kind"] != "RayService"
    ]
    return {
        "image": chart.image.repository,
        "dockerfile": DOCKERFILE.relative_to(REPO_ROOT).as_posix(),
        "build_args": {"VARIANT": chart.image.variant},
        "only": list(IMAGE_CONTEXT),
        "ignore": ["**/__pycache__"],
        "fall_back_on": [p for p in IMAGE_CONTEXT if p != LIVE_SYNC],
        "sync": {"local": LIVE_SYNC, "remote": f"{APP_DIR}/{LIVE_SYNC}"},
        "reload": RELOAD_COMMAND,
        # Tilt re-runs the Tiltfile (and so this) when these change: the manifests depend on them.
        "watch": [
            profile.source.relative_to(REPO_ROOT).as_posix(),
            "charts/dogbooth",
            "dogbooth/render",
            "dogbooth/settings",
        ],
        "manifests": manifests,
        "image_json_path": list(RAYSERVICE_IMAGE_PATHS),
        "resource": RESOURCE,
        "objects": objects,
        "forwards": [
            _forward(profile, "serve", "serve-svc", profile.serve.http_port),
            _forward(profile, "dashboard", "head-svc", DASHBOARD_PORT),
        ],
        "watchers": _watchers(profile),
    }
