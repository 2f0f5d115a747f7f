"""Bring-up and teardown of the cluster profiles (kind and eks) as ordered plans.

The order is the point. Up: cluster, (image), the KubeRay operator and its CRDs, ingress, then our
chart, then bounded waits. Down on eks: our chart, then the releases that own load balancers, then
a wait until AWS has really deleted those load balancers and the EBS volumes, and only then the
cluster; deleting the VPC first is what stranded the blueprint's load balancers.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

from dogbooth import REPO_ROOT, jupyterhub
from dogbooth import clusterconfig as cc
from dogbooth import plan as p
from dogbooth.cluster_settings import EksSettings, KindSettings, eks_target
from dogbooth.errors import BringUpError, CommandFailed, ProfileError
from dogbooth.helm import KubeTarget
from dogbooth.local import state_dir
from dogbooth.profiles import Profile
from dogbooth.releases import Release, releases_for

log = logging.getLogger("dogbooth.cluster")

DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"
TILTFILE = REPO_ROOT / "Tiltfile"
READY_TIMEOUT_S = {"kind": 20 * 60, "eks": 40 * 60}  # first pulls: a ~10 GB CUDA image, ~5 GB of weights
LB_TIMEOUT_S = 15 * 60
LB_TAG = "elbv2.k8s.aws/cluster"  # the AWS Load Balancer Controller tags every LB it makes with it

COMMAND_TOOLS = {
    ("kind", "dev"): ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt"),
    ("kind", "up"): ("docker", "kind", "ctlptl", "kubectl", "helm"),
    ("kind", "down"): ("docker", "kind", "ctlptl", "helm"),
    ("eks", "up"): ("docker", "kubectl", "helm", "eksctl", "aws"),
    ("eks", "down"): ("kubectl", "helm", "eksctl", "aws"),
}


def required_tools(platform: str, command: str) -> tuple[str, ...]:
    return COMMAND_TOOLS[(platform, command)]


def kind_settings(profile: Profile) -> KindSettings:
    if profile.cluster is None or profile.cluster.kind is None:
        raise ProfileError(f"{profile.source}: cluster.kind: missing")
    return profile.cluster.kind


def eks_settings(profile: Profile) -> EksSettings:
    if profile.cluster is None or profile.cluster.eks is None:
        raise ProfileError(f"{profile.source}: cluster.eks: missing")
    return profile.cluster.eks


# What the serve image is built from (services/Dockerfile.dockerignore lets exactly these in).
IMAGE_INPUTS = (
    "pyproject.toml",
    "constraints.txt",
    "services/Dockerfile",
    "dogbooth/**/*.py",
    "services/**/*.py",
)


def source_hash(root: Path = REPO_ROOT) -> str:
    """Content hash of the image's inputs: same inputs, same tag, so a re-run pushes nothing."""
    digest = hashlib.sha256()
    files = {path for pattern in IMAGE_INPUTS for path in root.glob(pattern) if path.is_file()}
    for path in sorted(files):
        if "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def kube_target(profile: Profile) -> KubeTarget:
    if profile.platform == "kind":
        return KubeTarget(context=kind_settings(profile).context)
    target = eks_target(eks_settings(profile))
    return KubeTarget(kubeconfig=state_dir() / f"kubeconfig-eks-{target.name}-{target.region}")


def app_release(profile: Profile, image: str) -> Release:
    from dogbooth.chart import CHART_DIR, RELEASE_NAME, chart_values, settings

    version = next(
        line.split(":", 1)[1].strip()
        for line in (CHART_DIR / "Chart.yaml").read_text().splitlines()
        if line.startswith("version:")
    )
    return Release(
        RELEASE_NAME,
        settings(profile).namespace,
        str(CHART_DIR.relative_to(REPO_ROOT)),
        "",
        version,
        chart_values(profile, image=image),
        phase="app",
    )


def image_steps(
    profile: Profile, image: str, *, platform_flag: str | None = None, only_if: str | None = None
) -> list[p.Step]:
    from dogbooth.chart import settings

    variant = settings(profile).image.variant
    build = [
        "docker",
        "build",
        "-f",
        str(DOCKERFILE.relative_to(REPO_ROOT)),
        "--build-arg",
        f"VARIANT={variant}",
        "-t",
        image,
        ".",
    ]
    if platform_flag:
        build[2:2] = ["--platform", platform_flag]
    return [
        p.command("image", f"build the serve image ({variant})", build, stream=True, only_if=only_if),
        p.command("image", "push it", ["docker", "push", image], stream=True, only_if=only_if),
    ]


def wait_steps(profile: Profile, *, scheme_note: str = "") -> list[p.Step]:
    from dogbooth import kube
    from dogbooth.chart import settings

    namespace = settings(profile).namespace
    timeout = READY_TIMEOUT_S[profile.platform]

    def ready(ctx: p.Context) -> None:
        names = ctx.kube.rayservice_names(namespace)
        if not names:
            raise BringUpError(f"no RayService in namespace {namespace}; did the chart install?")
        for name in names:
            kube.wait_rayservice_ready(ctx.kube, namespace, name, timeout_s=timeout)

    def address(ctx: p.Context) -> None:
        host = kube.wait_ingress_address(ctx.kube, namespace, timeout_s=LB_TIMEOUT_S)
        base = _endpoint_base(profile, host)
        if profile.platform == "kind":  # reachable from here; an internal NLB usually is not
            kube.wait_http_ok(f"{base}/readyz", timeout_s=5 * 60)
        ctx.values["endpoint"] = f"{base}/imagine"
        log.info(
            "Ray dashboard: port-forward only: kubectl -n %s port-forward svc/<rayservice>-head-svc 8265",
            namespace,
        )
        if scheme_note:
            log.info(scheme_note)

    return [
        p.python(
            "wait",
            f"wait for the RayService to be Ready (<= {timeout // 60} min)",
            [
                f"kubernetes API: ray.io/v1 RayService in {namespace}, condition Ready=True; on timeout: "
                "Pending pods (no GPU node), image pull errors, failing Serve apps are reported"
            ],
            ready,
        ),
        p.python(
            "wait",
            "wait for the Ingress address and print the endpoint",
            [f"kubernetes API: networking.k8s.io/v1 Ingress in {namespace}, status.loadBalancer"],
            address,
        ),
    ]


def _endpoint_base(profile: Profile, host: str) -> str:
    if profile.platform == "kind":
        kind = kind_settings(profile)
        return f"http://{kind.listen_address}:{kind.ingress_http_port}/dogbooth/serve"
    return f"http://{host}/dogbooth/serve"


# ---------------------------------------------------------------- kind


def _kind_cluster_steps(profile: Profile) -> list[p.Step]:
    kind = kind_settings(profile)
    steps = [
        p.command(
            "cluster",
            f"create or update registry {kind.registry_name} and cluster {kind.context}",
            ["ctlptl", "apply", "-f", "-"],
            input=cc.to_yaml(cc.ctlptl_config(kind)),
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


def _addon_steps(profile: Profile) -> list[p.Step]:
    hub_admin = jupyterhub.admin_secret_step(profile)  # None unless JupyterHub with native auth
    return [p.install(r) for r in releases_for(profile)] + ([hub_admin] if hub_admin else [])


def kind_up(profile: Profile) -> p.Plan:
    from dogbooth.chart import CHART_DIR, settings

    kind = kind_settings(profile)
    image = (
        f"localhost:{kind.registry_port}/{settings(profile).image.repository}:"
        f"{settings(profile).image.tag}-{source_hash()}"
    )
    steps = [
        *_kind_cluster_steps(profile),
        *image_steps(profile, image),
        *_addon_steps(profile),
        p.install(app_release(profile, image), chart_path=CHART_DIR),
        *wait_steps(profile),
    ]
    return p.Plan("up", profile.name, tuple(steps), (f"image {image} (tag = profile tag + hash of the image inputs)",))


def kind_dev(profile: Profile) -> p.Plan:
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
        *_addon_steps(profile),
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


def kind_down(profile: Profile) -> p.Plan:
    from dogbooth.chart import RELEASE_NAME, settings

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


# ---------------------------------------------------------------- entry points


def build_plan(command: str, profile: Profile) -> p.Plan:
    """The ordered plan of `command` (up, down, dev) for a kind or eks profile; builds touch nothing."""
    if profile.platform == "kind":
        return {"up": kind_up, "dev": kind_dev, "down": kind_down}[command](profile)
    if profile.platform == "eks":
        from dogbooth import eks

        if command == "dev":
            raise BringUpError(
                "no dev loop on eks: use --profile kind-cpu or kind-gpu for live reload, "
                "`nox -s cloud` to deploy to EKS"
            )
        return {"up": eks.up, "down": eks.down}[command](profile)
    raise BringUpError(f"profile {profile.name} is platform {profile.platform}, not a cluster")


def run(command: str, profile: Profile, *, dry_run: bool = False) -> str | None:
    """Print (dry run) or execute the plan; returns the /imagine URL after a successful up."""
    from dogbooth import tools
    from dogbooth.tools import Runner

    plan = build_plan(command, profile)
    if dry_run:
        print(plan.describe(), flush=True)
        print("(dry run: nothing was changed)", flush=True)
        return None
    tools.require(required_tools(profile.platform, command), purpose=f"`{command}` on profile {profile.name}")
    ctx = p.Context(profile, kube_target(profile), runner=Runner(cwd=REPO_ROOT))  # paths in plans are repo-relative
    try:
        plan.execute(ctx)
    except CommandFailed as e:
        raise BringUpError(f"{plan.name} for profile {profile.name} failed; re-running is safe.\n{e}") from e
    return ctx.values.get("endpoint")
