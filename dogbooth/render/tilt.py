"""Everything the Tiltfile needs, from the profile: `python -m dogbooth tilt-config --profile P` prints it.

The Tiltfile stays a short list of Tilt calls; every name, port, path and manifest it uses comes
from here, so it cannot drift from the profile, the chart or the image build.
"""

from __future__ import annotations

from typing import Any

import yaml

from dogbooth.core.names import DASHBOARD_PORT, RELEASE_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.render.chart import render_stdout, settings
from dogbooth.render.image import APP_DIR, DOCKERFILE, IMAGE_CONTEXT, LIVE_SYNC
from dogbooth.settings.profiles import Profile

RESOURCE = "dogbooth"  # the Tilt resource that groups our objects
# Where Tilt finds the images inside the RayService (it only knows Deployments' paths itself).
RAYSERVICE_IMAGE_PATHS = (
    "{.spec.rayClusterConfig.headGroupSpec.template.spec.containers[*].image}",
    "{.spec.rayClusterConfig.workerGroupSpecs[*].template.spec.containers[*].image}",
)
RELOAD_COMMAND = "python -m dogbooth.platforms.reload"


def _forward(profile: Profile, name: str, service: str, port: int) -> dict[str, Any]:
    context = profile.cluster.kind.context if profile.cluster and profile.cluster.kind else None
    namespace = settings(profile).namespace
    argv = ["kubectl", *(["--context", context] if context else []), "-n", namespace, "port-forward"]
    argv += ["--address", "127.0.0.1", f"svc/{RELEASE_NAME}-{service}", f"{port}:{port}"]
    return {"name": f"{name}-{port}", "port": port, "cmd": argv}


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
    }
