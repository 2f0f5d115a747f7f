"""The kind plans: `up` (cluster, image, add-ons, chart, waits), `dev` (the same, then Tilt) and `down`.

The cluster comes from the generated ctlptl config (dogbooth.render.clusterconfig); a kind-gpu
profile adds a GPU worker set up the way NVIDIA's nvkind does it.
"""

from __future__ import annotations

import sys

from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.yamlfile import dump_all
from dogbooth.platforms import plan as p
from dogbooth.platforms.kubesteps import addon_steps, app_release, image_steps, kind_settings, source_hash, wait_steps
from dogbooth.platforms.roll import roll_step
from dogbooth.render import clusterconfig as cc
from dogbooth.render.chart import CHART_DIR, RELEASE_NAME, settings
from dogbooth.settings.profiles import Profile

TILTFILE = REPO_ROOT / "Tiltfile"


def _kind_cluster_steps(profile: Profile) -> list[p.Step]:
    kind = kind_settings(profile)
    steps = [
        p.command(
            "cluster",
            f"create or update registry {kind.registry_name} and cluster {kind.context}",
            ["ctlptl", "apply", "-f", "-"],
            input=dump_all(cc.ctlptl_config(kind)),
            input_label="generated ctlptl config (below)",
            show_input=True,
        )
    ]
    if kind.gpu:
        node = cc.kind_gpu_node(kind)
        script = cc.GPU_NODE_SCRIPT.read_text()
        steps += [
            p.command(
                "cluster",
                "set up the GPU worker node (nvkind style: toolkit, containerd runtime)",
                ["docker", "exec", "-i", node, "bash", "-s"],
                input=script,
                input_label=str(cc.GPU_NODE_SCRIPT.relative_to(REPO_ROOT)),
                stream=True,
            ),
            p.command(
                "cluster",
                "register the nvidia RuntimeClass",
                [
                    "kubectl",
                    "--context",
                    kind.context,
                    "apply",
                    "-f",
                    str(cc.NVIDIA_RUNTIME_CLASS.relative_to(REPO_ROOT)),
                ],
            ),
        ]
    return steps


def up(profile: Profile) -> p.Plan:
    kind = kind_settings(profile)
    image = (
        f"localhost:{kind.registry_port}/{settings(profile).image.repository}:"
        f"{settings(profile).image.tag}-{source_hash()}"
    )
    steps = [
        *_kind_cluster_steps(profile),
        *image_steps(profile, image),
        *addon_steps(profile),
        p.install(app_release(profile, image), chart_path=CHART_DIR),
        *([roll_step(settings(profile).namespace)] if settings(profile).upgrade_strategy == "None" else []),
        *wait_steps(profile),
    ]
    return p.Plan("up", profile.name, tuple(steps), (f"image {image} (tag = profile tag + hash of the image inputs)",))


def dev(profile: Profile) -> p.Plan:
    kind = kind_settings(profile)
    tilt = [
        "tilt",
        "up",
        "--file",
        str(TILTFILE.relative_to(REPO_ROOT)),
        "--context",
        kind.context,
        "--",
        "--profile",
        profile.name,
    ]
    steps = [
        *_kind_cluster_steps(profile),
        *addon_steps(profile),
        p.command(
            "app",
            "tilt up: build, deploy the chart, live-update services/ (Ctrl-C stops Tilt)",
            tilt,
            stream=True,
            ok_codes=(0, 130),
            env={"DOGBOOTH_PYTHON": sys.executable},  # the Tiltfile renders the chart with this Python
        ),
    ]
    return p.Plan("dev", profile.name, tuple(steps), ("re-running is safe: every step converges",))


def down(profile: Profile) -> p.Plan:
    kind = kind_settings(profile)

    def exists(ctx: p.Context) -> None:
        ctx.flags["cluster_exists"] = kind.cluster_name in ctx.runner.run(["kind", "get", "clusters"]).split()

    steps = [
        p.python("cluster", f"does kind cluster {kind.cluster_name} exist?", ["$ kind get clusters"], exists),
        p.uninstall("app", RELEASE_NAME, settings(profile).namespace, only_if="cluster_exists"),
        p.command(
            "cluster",
            f"delete cluster {kind.context} (the registry stays, with its image cache)",
            ["ctlptl", "delete", "cluster", kind.context, "--ignore-not-found"],
        ),
    ]
    return p.Plan("down", profile.name, tuple(steps))
