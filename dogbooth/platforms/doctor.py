"""`nox -s doctor`: everything a profile needs, checked in seconds, before anything is created.

`checks_for` lists a profile's checks: the tools of the command, then for kind the Docker server,
its memory against the chart's requests, its disk against the image variant, the GPU runtime and
driver (kind-gpu) and the kube context; for eks the AWS identity, the instance offerings, both vCPU
quotas and the private kubeconfig; for local the Python, its packages, the ports and /tmp.
`report` prints them as a table, one row per check, `ok` or `FIX: <what to do>`. `up`, `dev` and
`cloud` call `preflight` first, which raises on any FIX; a dry run prints what it would check.
The tool, kube context and local checks are here; the Docker, GPU driver and AWS ones, and the
`Probe` they all ask through, in dogbooth/platforms/doctorchecks.py.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dogbooth.core.errors import CommandFailed, DogboothError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import TOOLS, Runner
from dogbooth.platforms import local
from dogbooth.platforms.doctorchecks import (
    GIB,
    Check,
    NeedsFix,
    Probe,
    docker_checks,
    driver_check,
    gib,
    identity_check,
    offering_check,
    quota_check,
    said,
)
from dogbooth.platforms.kubesteps import eks_kubeconfig, eks_settings, kind_settings, required_tools
from dogbooth.render.chart import settings
from dogbooth.render.clusterconfig import memory_plan
from dogbooth.render.image import VARIANTS
from dogbooth.render.karpenter import gpu_limit
from dogbooth.settings.cluster import eks_target
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.doctor")

PREFLIGHT_COMMANDS = ("up", "dev")  # `cloud` is `up` on eks; `down` must work even on a broken machine
LOCAL_PACKAGES = ("ray", "torch", "diffusers", "fastapi")
LOCAL_TMP, LOCAL_TMP_GIB = "/tmp", 2  # Ray's temp dir (dogbooth/platforms/local.py): logs, spilled objects


@dataclass(frozen=True)
class Row:
    check: str
    fix: str | None  # None: ok
    found: str = ""

    @property
    def result(self) -> str:
        return f"FIX: {self.fix}" if self.fix else f"ok   {self.found}".rstrip()


class PreflightFailed(DogboothError):
    """Some checks need a fix; nothing was created. Lists them unless the table was just printed."""

    def __init__(self, profile: str, failed: list[Row], *, listed: bool = True) -> None:
        self.failed = failed
        head = f"{len(failed)} preflight check(s) need a fix for profile {profile}; nothing was created"
        lines = "".join(f"\n  - {row.check}: {row.fix}" for row in failed)
        super().__init__(head + (":" + lines if listed else " (the FIX rows above say what to do)"))


def default_command(profile: Profile) -> str:
    """What `doctor` checks for when not told: kind's `dev` needs the most (tilt too), eks's `up`."""
    return "dev" if profile.platform == "kind" else "up"


def checks_for(profile: Profile, command: str) -> list[Check]:
    """The checks `command` (up, dev) on `profile` needs, in the order the table shows them."""
    if profile.platform == "local":
        return local_checks(profile)
    tools = [tool_check(name) for name in required_tools(profile.platform, command)]
    return tools + (kind_checks(profile) if profile.platform == "kind" else eks_checks(profile))


def memory_need(profile: Profile) -> tuple[float, str]:
    """Bytes Docker must hold at the peak (render/clusterconfig.memory_plan: the reserve for the
    control plane and add-ons, plus every RayCluster a rebuild runs at once), and how that adds up."""
    plan = memory_plan(profile)
    clusters = f"{plan.clusters_during_rebuild} RayCluster(s) x {gib(plan.per_cluster)}"
    return plan.peak, f"reserve {gib(plan.reserve)} + {clusters} (head + workers, limits)"


def kind_checks(profile: Profile) -> list[Check]:
    kind, chart = kind_settings(profile), settings(profile)
    variant = VARIANTS[chart.image.variant]
    checks = docker_checks("kind", variant, memory_need(profile), gpu=kind.gpu)
    if kind.gpu:
        checks.append(driver_check(variant))
    return [*checks, kind_context_check(kind.cluster_name, kind.context)]


def eks_checks(profile: Profile) -> list[Check]:
    eks = eks_settings(profile)
    region = eks_target(eks).region
    gpu = eks.gpu_nodegroup
    if eks.karpenter.enabled:  # its GPU NodePool may start one single-GPU node per GPU of its limit
        gpu = gpu.model_copy(update={"max_size": gpu_limit(profile)})
    groups = (gpu, eks.system_nodegroup)
    types = sorted({group.instance_type for group in groups})
    return [
        *docker_checks("eks", VARIANTS[settings(profile).image.variant], None, gpu=False),
        identity_check(),
        offering_check(region, types),
        *(quota_check(region, group, types) for group in groups),
        kubeconfig_check(eks_kubeconfig(profile)),
    ]


def tool_check(name: str) -> Check:
    tool = TOOLS[name]
    want = ".".join(map(str, tool.minimum))

    def test(probe: Probe) -> str:
        fix = probe.tool_fix(name)
        if fix:
            raise NeedsFix(fix)
        return f"{want} or newer"

    return Check(name, f"{name} on PATH, version >= {want} ($ {shlex.join([name, *tool.version_args])})", test)


def kind_context_check(cluster_name: str, context: str) -> Check:
    def test(probe: Probe) -> str:
        try:
            clusters = probe.output(("kind", "get", "clusters")).split()
        except CommandFailed as e:
            raise NeedsFix(f"`kind get clusters` failed ({said(e)}): is Docker up? (docker server row)") from None
        if cluster_name not in clusters:
            return f"{context}: cluster {cluster_name} does not exist yet; ctlptl apply creates it"
        try:
            contexts = probe.output(("kubectl", "config", "get-contexts", "-o", "name")).split()
        except CommandFailed as e:
            raise NeedsFix(f"`kubectl config get-contexts` failed: {said(e)}") from None
        if context not in contexts:
            raise NeedsFix(f"cluster {cluster_name} exists but no kube context {context}: kind export kubeconfig "
                           f"--name {cluster_name}")  # fmt: skip
        return f"{context} exists; ctlptl apply updates it in place"

    would = f"$ kind get clusters; $ kubectl config get-contexts -o name: {context} exists or will be created"
    return Check("kube context", would, test)


def kubeconfig_check(path: Path) -> Check:
    def test(_: Probe) -> str:
        if path.exists():
            return f"{path} (from an earlier run; ~/.kube/config is left alone)"
        parent = next(p for p in path.parents if p.exists())
        if not os.access(parent, os.W_OK):
            raise NeedsFix(f"{parent} is not writable, so {path} cannot be written: fix its permissions or "
                           "export DOGBOOTH_STATE_DIR=<a writable directory>")  # fmt: skip
        return f"{path} (the plan writes it; ~/.kube/config is left alone)"

    return Check("kubeconfig", f"private kubeconfig {path}: exists or its directory is writable", test)


def _requires_python() -> tuple[int, int]:
    spec = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.search(r">=\s*(\d+)\.(\d+)", spec)
    return (int(m.group(1)), int(m.group(2))) if m else (3, 0)


def _python(_: Probe) -> str:
    want, have = _requires_python(), sys.version_info[:2]
    if have < want:
        raise NeedsFix(f"Python {have[0]}.{have[1]} is older than {want[0]}.{want[1]} (requires-python): "
                       "run dogbooth with a newer Python (nox builds .nox/dogbooth with its own)")  # fmt: skip
    return f"{sys.version.split()[0]} ({sys.executable})"


def _packages(_: Probe) -> str:
    missing = [name for name in LOCAL_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise NeedsFix(f"{', '.join(missing)} not importable by {sys.executable}: install the project "
                       "(`nox -s tests` builds .nox/dogbooth; or pip install -c constraints.txt -e .)")  # fmt: skip
    return f"{', '.join(LOCAL_PACKAGES)} importable"


def _ports(profile: Profile) -> Check:
    shown = ", ".join(f"{key} {port}" for key, port in local.profile_ports(profile).items())

    def test(_: Probe) -> str:
        state = local.LocalState.read(profile.name)
        if state is not None and local.is_alive(state):
            return f"{shown}: held by this profile's running stack (up again updates it)"
        if busy := local.busy_ports(profile):
            raise NeedsFix("; ".join(busy) + f": stop that process or change the port in {profile.source} "
                           "(or pass --port for the HTTP port)")  # fmt: skip
        return f"{shown} free"

    return Check("ports", f"{shown} free on 127.0.0.1, or held by this profile's own stack", test)


def _tmp_disk(probe: Probe) -> str:
    free = probe.free_bytes(LOCAL_TMP)
    if free is None:
        raise NeedsFix(f"{LOCAL_TMP} is missing or unreadable: Ray keeps its session logs there")
    if free < LOCAL_TMP_GIB * GIB:
        raise NeedsFix(f"{gib(free)} free under {LOCAL_TMP}, Ray's temp dir needs {LOCAL_TMP_GIB} GiB: free space")
    return f"{gib(free)} free under {LOCAL_TMP} >= {LOCAL_TMP_GIB} GiB"


def local_checks(profile: Profile) -> list[Check]:
    want = ".".join(map(str, _requires_python()))
    return [
        Check("python", f"this Python >= {want} (pyproject.toml requires-python)", _python),
        Check("packages", f"{', '.join(LOCAL_PACKAGES)} importable by this Python", _packages),
        _ports(profile),
        Check("disk", f"free space under {LOCAL_TMP} (Ray's temp dir) >= {LOCAL_TMP_GIB} GiB", _tmp_disk),
    ]


def run_checks(checks: list[Check], probe: Probe) -> list[Row]:
    rows = []
    for i, check in enumerate(checks, 1):
        log.info("doctor [%d/%d] %s", i, len(checks), check.name)
        try:
            rows.append(Row(check.name, None, check.test(probe)))
        except (NeedsFix, DogboothError) as e:  # DogboothError: e.g. a tool vanished between which and run
            rows.append(Row(check.name, str(e)))
    return rows


def table(rows: list[Row]) -> str:
    width = max(len("CHECK"), *(len(row.check) for row in rows)) + 2
    lines = [f"{'CHECK':<{width}}RESULT", *(f"{row.check:<{width}}{row.result}" for row in rows)]
    failed = sum(1 for row in rows if row.fix)
    lines.append(f"{len(rows) - failed} ok, {failed} to fix")
    return "\n".join(lines)


def describe(profile: Profile, command: str) -> str:
    """What a dry run prints: the checks `preflight` would run, without running them."""
    checks = checks_for(profile, command)
    args = f"--profile {profile.name}" + ("" if command == default_command(profile) else f" --for {command}")
    lines = [f"preflight for `{command}` on profile {profile.name}: {len(checks)} checks, run first "
             f"(`nox -s doctor -- {args}` runs them now)"]  # fmt: skip
    return "\n".join(lines + [f"  - {check.name}: {check.would}" for check in checks])


def report(profile: Profile, command: str, *, probe: Probe | None = None, listed: bool = True) -> list[Row]:
    """Run the checks, print the table; PreflightFailed when any row needs a fix."""
    print(f"doctor: profile {profile.name} (platform {profile.platform}), checks for `{command}`", flush=True)
    rows = run_checks(checks_for(profile, command), probe or Probe(runner=Runner(cwd=REPO_ROOT)))
    print(table(rows), flush=True)
    failed = [row for row in rows if row.fix]
    if failed:
        raise PreflightFailed(profile.name, failed, listed=listed)
    return rows


def preflight(profile: Profile, command: str, *, dry_run: bool = False, probe: Probe | None = None) -> None:
    """Before `command` creates anything: print the checks (dry run) or run them, raising on a FIX."""
    if dry_run:
        print(describe(profile, command), flush=True)
        return
    report(profile, command, probe=probe)
