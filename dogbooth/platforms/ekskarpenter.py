"""eks plan steps around dogbooth's private kubeconfig and Karpenter's objects (render/karpenter.py).

eksctl installs Karpenter itself when it creates the cluster; `cloud` applies the NodePools and
EC2NodeClasses, `down` deletes them first so Karpenter terminates the nodes it launched.
"""

from __future__ import annotations

from dogbooth.core.errors import BringUpError, CommandFailed
from dogbooth.core.yamlfile import dump_all
from dogbooth.platforms import plan as p
from dogbooth.platforms.kubesteps import LB_TIMEOUT_S, eks_kubeconfig, eks_settings, kube_target
from dogbooth.render import karpenter
from dogbooth.settings.cluster import EksTarget
from dogbooth.settings.profiles import Profile

KARPENTER_CRDS = ("nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws")


def kubectl(profile: Profile, *args: str) -> list[str]:
    return ["kubectl", *kube_target(profile).kubectl_args(), *args]


def eksctl_env(profile: Profile) -> dict[str, str]:
    return {"KUBECONFIG": str(eks_kubeconfig(profile))}


def apply_steps(profile: Profile, t: EksTarget) -> list[p.Step]:
    """Karpenter's NodePools and EC2NodeClasses; eksctl installed Karpenter itself with the cluster."""
    docs = karpenter.objects(profile, t)
    if not docs:
        return []
    crds = kubectl(profile, "get", "crd", *KARPENTER_CRDS, "-o", "name")

    def installed(ctx: p.Context) -> None:
        try:
            ctx.runner.run(crds)
        except CommandFailed as e:
            raise BringUpError(
                f"cluster {t.name} has no Karpenter: eksctl installs it only when it creates a cluster.\n"
                f"  Re-create it (nox -s down -- --profile eks; nox -s cloud), or set "
                f"cluster.eks.karpenter.enabled: false in {profile.source} for a fixed GPU nodegroup.\n{e}"
            ) from e

    limit = karpenter.gpu_limit(profile)
    k = eks_settings(profile).karpenter
    return [
        p.python(
            "platform",
            "is Karpenter installed? (eksctl adds it only at create)",
            ["$ " + " ".join(crds)],
            installed,
            only_if="cluster_exists",
        ),
        p.command(
            "platform",
            f"Karpenter {k.version}: NodePool gpu (<= {limit} nvidia.com/gpu), NodePool cpu (<= {k.cpu_limit} vCPU)",
            kubectl(profile, "apply", "-f", "-"),
            input=dump_all(docs),
            input_label="generated Karpenter objects (below)",
            show_input=True,
        ),
    ]


def teardown_steps(profile: Profile, gate: str) -> list[p.Step]:
    """Delete every NodePool, then every EC2NodeClass, while Karpenter still runs.

    Karpenter drains and terminates the nodes it launched (eksctl knows nothing of them: left
    running, they would keep the VPC from being deleted) and deletes their launch templates.
    """
    if not eks_settings(profile).karpenter.enabled:
        return []
    timeout = f"--timeout={LB_TIMEOUT_S}s"
    commands = [kubectl(profile, "delete", kind, "--all", "--wait=true", timeout) for kind in KARPENTER_CRDS]

    def delete(ctx: p.Context) -> None:
        for argv in commands:
            try:
                ctx.runner.run(argv)
            except CommandFailed as e:
                if "doesn't have a resource type" not in e.stderr:  # no Karpenter here: nothing to delete
                    raise

    detail = ["$ " + " ".join(argv) for argv in commands]
    title = "delete Karpenter's NodePools and EC2NodeClasses: it terminates the nodes it launched"
    return [p.python("nodes", title, detail, delete, only_if=gate)]
