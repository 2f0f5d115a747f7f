"""The steps both cluster platforms (kind and eks) share: the image, the add-ons, our chart, the waits.

Each returns `plan.Step`s; nothing here runs a tool while a plan is built, so `--dry-run` needs
no cluster. kind.py and eks.py put these in order around their own cluster steps.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

from dogbooth.core.errors import BringUpError
from dogbooth.core.names import DASHBOARD_PORT
from dogbooth.core.paths import REPO_ROOT, state_dir
from dogbooth.platforms import kube
from dogbooth.platforms import plan as p
from dogbooth.platforms.helm import KubeTarget
from dogbooth.render import jupyterhub
from dogbooth.render.chart import CHART_DIR, RELEASE_NAME, chart_values, settings
from dogbooth.render.image import DOCKERFILE, image_files
from dogbooth.render.jupyterhub import ADMIN_SECRET, ADMIN_SECRET_KEY, NAMESPACE
from dogbooth.render.releases import Release, releases_for
from dogbooth.settings.cluster import eks_target
from dogbooth.settings.profiles import Profile
from dogbooth.settings.profiles import eks_settings as eks_settings  # re-exported: callers import it from here
from dogbooth.settings.profiles import kind_settings as kind_settings  # re-exported too

log = logging.getLogger("dogbooth.platforms")

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


def source_hash(root: Path = REPO_ROOT) -> str:
    """Content hash of every file the image copies: same inputs, same tag, so a re-run pushes nothing."""
    digest = hashlib.sha256()
    for path in image_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def eks_kubeconfig(profile: Profile) -> Path:
    """dogbooth's private kubeconfig for an eks profile's cluster (~/.kube/config is left alone)."""
    target = eks_target(eks_settings(profile))
    return state_dir() / f"kubeconfig-eks-{target.name}-{target.region}"


def kube_target(profile: Profile) -> KubeTarget:
    if profile.platform == "kind":
        return KubeTarget(context=kind_settings(profile).context)
    return KubeTarget(kubeconfig=eks_kubeconfig(profile))


def app_release(profile: Profile, image: str) -> Release:
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
        if profile.platform == "kind":  # reachable from here; an internal ALB usually is not
            kube.wait_http_ok(f"{base}/readyz", timeout_s=5 * 60)
        ctx.values["endpoint"] = f"{base}/imagine"
        log.info(
            "Ray dashboard: port-forward only: kubectl -n %s port-forward svc/<rayservice>-head-svc %d",
            namespace,
            DASHBOARD_PORT,
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


def addon_steps(profile: Profile) -> list[p.Step]:
    """Install every add-on release of the profile, then (JupyterHub with native auth) its admin Secret."""
    hub_admin = admin_secret_step(profile)
    return [p.install(r) for r in releases_for(profile)] + ([hub_admin] if hub_admin else [])


def admin_secret_step(profile: Profile) -> p.Step | None:
    """The bring-up step that generates the admin password into its Secret (native auth only).

    Like the API key (platforms/eks.py, both via random_secret_step): made only when absent, never logged,
    never rotated by a re-run. Runs before the JupyterHub release, which mounts the Secret.
    """
    hub = jupyterhub.settings(profile)
    if hub is None or hub.auth != "native":
        return None
    return random_secret_step("addons", "JupyterHub admin", "password", NAMESPACE, ADMIN_SECRET, ADMIN_SECRET_KEY, 24)


def random_secret_step(phase: str, owner: str, word: str, namespace: str, name: str, key: str, nbytes: int) -> p.Step:
    """A step that creates Secret namespace/name holding a random `word` under `key`, only when absent.

    The value is never logged and a re-run never rotates it; the log says how to read it back.
    """

    def ensure(ctx: p.Context) -> None:
        if ctx.kube.ensure_secret(namespace, name, key, lambda: secrets.token_urlsafe(nbytes)):
            log.info(
                "created %s Secret %s/%s holding a random %s (not printed); read it with:\n"
                "  kubectl %s -n %s get secret %s -o jsonpath='{.data.%s}' | base64 -d",
                owner, namespace, name, word, " ".join(ctx.target.kubectl_args()), namespace, name, key,
            )  # fmt: skip

    title = f"{owner} Secret {namespace}/{name} (a random {word} is made if it is missing)"
    detail = [f"kubernetes API: create the namespace and Secret only when absent; the {word} is never logged"]
    return p.python(phase, title, detail, ensure)
