"""The eks plans: `nox -s cloud` (create-or-upgrade, image to ECR, add-ons, chart) and `down`.

Nothing here talks to AWS while a plan is built, so `--dry-run` works without credentials; the
account id and VPC id are looked up by the first steps of a real run.

~/.kube/config is never touched: every kubectl and helm call names dogbooth's private kubeconfig
(kubesteps.kube_target), `eksctl create cluster` writes none, and every eksctl call runs with
KUBECONFIG pointing at the private file (`eksctl delete cluster` edits whatever that names).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from dogbooth.core.errors import BringUpError, CommandFailed
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.polling import poll
from dogbooth.core.yamlfile import dump_all
from dogbooth.platforms import ecr, ekskarpenter
from dogbooth.platforms import plan as p
from dogbooth.platforms.ekskarpenter import eksctl_env, kubectl
from dogbooth.platforms.kubesteps import (
    LB_TAG,
    LB_TIMEOUT_S,
    admin_secret_step,
    app_release,
    eks_kubeconfig,
    eks_settings,
    random_secret_step,
    source_hash,
    wait_steps,
)
from dogbooth.render import eksctl
from dogbooth.render.chart import CHART_DIR, RELEASE_NAME, settings
from dogbooth.render.releases import releases_for
from dogbooth.settings.cluster import EksTarget, eks_target
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.platforms.eks")
# eksctl would install its own NVIDIA device plugin on GPU nodegroups; ours comes from Helm with GFD.
NO_PLUGIN = "--install-nvidia-plugin=false"
# `create cluster` would write ~/.kube/config and switch its current context (both default to true).
NO_KUBECONFIG = "--write-kubeconfig=false --set-kubeconfig-context=false"
# helm uninstall --wait returns once the Ingress is gone, and the Load Balancer Controller's finalizer
# keeps it until the ALB is deleted; the AWS-side wait below then checks that no load balancer is left.
APP_WHY = "its Ingress owns the ALB; its pods' gp3 claims go too"


def _exists_step(t: EksTarget) -> p.Step:
    argv = ["eksctl", "get", "cluster", "--name", t.name, "--region", t.region, "-o", "json"]

    def check(ctx: p.Context) -> None:
        try:
            ctx.runner.run(argv)
            exists = True
        except CommandFailed as e:
            if not any(m in e.stderr.lower() for m in ("no cluster found", "resourcenotfound")):
                raise
            exists = False
        ctx.flags.update(cluster_exists=exists, cluster_missing=not exists)
        log.info("cluster %s in %s %s", t.name, t.region, "exists" if exists else "does not exist")

    return p.python("cluster", f"does EKS cluster {t.name} exist in {t.region}?", ["$ " + " ".join(argv)], check)


def _eksctl(profile: Profile, title: str, verb: str, config: str, only_if: str, *, first: bool = False) -> p.Step:
    label = "generated eksctl ClusterConfig (below)" if first else "the same config"
    argv = ["eksctl", *verb.split(), "-f", "-"]
    return p.command(
        "cluster",
        title,
        argv,
        input=config,
        input_label=label,
        show_input=first,
        stream=True,
        only_if=only_if,
        env=eksctl_env(profile),
    )


def _kubeconfig_step(profile: Profile, t: EksTarget, only_if: str | None = None) -> p.Step:
    path = eks_kubeconfig(profile)
    argv = ["eksctl", "utils", "write-kubeconfig", "--cluster", t.name, "--region", t.region]
    argv += ["--kubeconfig", str(path)]

    def write(ctx: p.Context) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ctx.runner.run(argv)

    title = "write a private kubeconfig for this cluster (~/.kube/config is left alone)"
    return p.python("cluster", title, ["$ " + " ".join(argv)], write, only_if=only_if)


def _cluster_steps(profile: Profile, t: EksTarget) -> list[p.Step]:
    config = dump_all([eksctl.eksctl_config(eks_settings(profile), t)])
    whoami = ["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"]
    vpc = [
        "aws",
        "eks",
        "describe-cluster",
        "--name",
        t.name,
        "--region",
        t.region,
        "--query",
        "cluster.resourcesVpcConfig.vpcId",
        "--output",
        "text",
    ]
    return [
        p.command("cluster", "caller identity (fails fast without AWS credentials)", whoami, capture="account"),
        _exists_step(t),
        _eksctl(
            profile,
            "create the cluster, and Karpenter with it (~20 min; ~/.kube/config is left alone)",
            f"create cluster {NO_PLUGIN} {NO_KUBECONFIG}",
            config,
            "cluster_missing",
            first=True,
        ),
        _eksctl(
            profile,
            "upgrade the control plane if the profile's version is newer (one minor per run)",
            "upgrade cluster --approve",
            config,
            "cluster_exists",
        ),
        _eksctl(
            profile,
            "create nodegroups new in the profile (existing ones are kept)",
            f"create nodegroup {NO_PLUGIN}",
            config,
            "cluster_exists",
        ),
        _eksctl(
            profile,
            "update the EKS add-ons (VPC CNI with network policy, EBS CSI driver, pod identity agent)",
            "update addon",
            config,
            "cluster_exists",
        ),
        _kubeconfig_step(profile, t),
        p.command("cluster", "look up the VPC id (for the load balancer controller)", vpc, capture="vpc_id"),
    ]


def _api_key_step(profile: Profile) -> p.Step:
    c = settings(profile)
    secret = c.api_key.secret
    return random_secret_step("app", "API key", "key", c.namespace, secret.secret_name, secret.secret_key, 32)


def up(profile: Profile) -> p.Plan:
    eks, t = eks_settings(profile), eks_target(eks_settings(profile))
    image = (
        f"${{account}}.dkr.ecr.{t.region}.amazonaws.com/{eks.ecr_repository}:"
        f"{settings(profile).image.tag}-{source_hash()}"
    )
    storage_class = kubectl(profile, "apply", "-f", str(eksctl.GP3_STORAGE_CLASS.relative_to(REPO_ROOT)))
    releases = releases_for(profile)
    platform = [r for r in releases if r.phase == "platform"]
    steps = [
        *_cluster_steps(profile, t),
        *ecr.steps(profile, t, eks.ecr_repository, image),
        *[p.install(r) for r in platform],
        p.command("platform", "gp3 StorageClass, encrypted, the default", storage_class),
        *ekskarpenter.apply_steps(profile, t),
        *[p.install(r) for r in releases if r not in platform],
    ]
    if settings(profile).api_key.enabled:
        steps.append(_api_key_step(profile))
    if (hub_admin := admin_secret_step(profile)) is not None:
        steps.append(hub_admin)  # the hub mounts it and reads it at each admin login
    internal = profile.cluster is not None and profile.cluster.addons.ingress_internal
    note = (
        f"the ALB is internal: call it from inside the VPC, or port-forward Serve itself: kubectl --kubeconfig "
        f"{eks_kubeconfig(profile)} -n {settings(profile).namespace} port-forward svc/{RELEASE_NAME}-serve-svc "
        f"{profile.serve.http_port} (then http://127.0.0.1:{profile.serve.http_port}/imagine)"
        if internal
        else "the ALB is internet-facing; the API key guards /imagine"
    )
    steps += [
        p.install(app_release(profile, image), chart_path=CHART_DIR),
        *wait_steps(profile, scheme_note=note),
    ]
    notes = (
        f"cluster {t.name} in {t.region}, Kubernetes {eks.kubernetes_version}; ${{account}} and ${{vpc_id}} are "
        "looked up at run time",
        f"image {image}",
        f"kubeconfig: {eks_kubeconfig(profile)} for every kubectl and helm call (--kubeconfig) and as "
        "KUBECONFIG for eksctl; ~/.kube/config is not written",
    )
    return p.Plan("cloud", profile.name, tuple(steps), notes)


def _tagged_load_balancers(ctx: p.Context, t: EksTarget) -> list[str]:
    argv = [
        "aws",
        "resourcegroupstaggingapi",
        "get-resources",
        "--region",
        t.region,
        "--resource-type-filters",
        "elasticloadbalancing:loadbalancer",
        "--tag-filters",
        f"Key={LB_TAG},Values={t.name}",
        "--query",
        "ResourceTagMappingList[].ResourceARN",
        "--output",
        "json",
    ]
    return list(json.loads(ctx.runner.run(argv) or "[]") or [])


def _until_none_left(what: str, left: Callable[[], list[str]], leftover: str) -> None:
    """Poll until `left()` is empty; on timeout, `leftover` (with {} for the names) says what stayed."""
    poll(
        what,
        lambda: True if not left() else None,
        timeout_s=LB_TIMEOUT_S,
        on_timeout=lambda: "  - " + leftover.format(", ".join(left())),
    )


def _services_gone(ctx: p.Context) -> None:
    _until_none_left(
        "Services of type LoadBalancer to be deleted",
        ctx.kube.load_balancer_services,
        "still there: {} (is the AWS Load Balancer Controller running?)",
    )


def _aws_lbs_gone(ctx: p.Context, t: EksTarget) -> None:
    try:
        poll(
            f"AWS to delete the load balancers tagged {LB_TAG}={t.name}",
            lambda: True if not _tagged_load_balancers(ctx, t) else None,
            timeout_s=LB_TIMEOUT_S,
            interval_s=15,
        )
    except BringUpError as e:
        commands = [
            f"  aws elbv2 delete-load-balancer --region {t.region} --load-balancer-arn {arn}"
            for arn in _tagged_load_balancers(ctx, t)
        ]
        raise BringUpError(f"{e}\nNot deleting the cluster; these would be stranded:\n" + "\n".join(commands)) from e


def _volumes_gone(ctx: p.Context) -> None:
    _until_none_left("EBS volumes of deleted claims to be released", ctx.kube.ebs_volumes, "PersistentVolumes left: {}")


def down(profile: Profile) -> p.Plan:
    t, gate = eks_target(eks_settings(profile)), "cluster_exists"
    lb_query = (
        f"$ aws resourcegroupstaggingapi get-resources --region {t.region} --resource-type-filters "
        f"elasticloadbalancing:loadbalancer --tag-filters Key={LB_TAG},Values={t.name}   # until empty"
    )
    owners = [r for r in reversed(releases_for(profile)) if r.owns_load_balancer]
    delete = ["eksctl", "delete", "cluster", "--name", t.name, "--region", t.region, "--wait"]
    steps = [
        _exists_step(t),
        _kubeconfig_step(profile, t, only_if=gate),
        p.uninstall("app", RELEASE_NAME, settings(profile).namespace, why=APP_WHY, only_if=gate),
        *[p.uninstall(r.phase, r.name, r.namespace, why="its Service owns an NLB", only_if=gate) for r in owners],
        p.python(
            "lb-wait",
            "wait until no Service of type LoadBalancer is left",
            [f"kubernetes API: Services of type LoadBalancer (<= {LB_TIMEOUT_S // 60} min)"],
            _services_gone,
            only_if=gate,
        ),
        p.python(
            "lb-wait",
            "wait until AWS has deleted the load balancers (runs even if the cluster is gone)",
            [lb_query],
            lambda ctx: _aws_lbs_gone(ctx, t),
        ),
        *ekskarpenter.teardown_steps(profile, gate),
        p.python(
            "volumes-wait",
            "wait until the EBS volumes are released",
            ["kubernetes API: PersistentVolumes of driver ebs.csi.aws.com, until none"],
            _volumes_gone,
            only_if=gate,
        ),
        p.command(
            "cluster",
            "delete the cluster, its nodegroups, IAM roles and VPC (~15 min)",
            delete,
            stream=True,
            only_if=gate,
            env=eksctl_env(profile),  # it removes the cluster's context from $KUBECONFIG: ours, not ~/.kube/config
        ),
    ]
    notes = (
        f"cluster {t.name} in {t.region}; safe to run twice: absent things are skipped",
        "the ECR repository and its images are kept (aws ecr delete-repository --force removes them)",
    )
    return p.Plan("down", profile.name, tuple(steps), notes)
