"""The Docker, GPU driver and AWS checks of `nox -s doctor`, and the `Probe` every check asks through.

A `Check` is a name, the line a dry run prints, and a test that returns what it found or raises
`NeedsFix` with what to do. Tests ask through a `Probe`: tool versions through dogbooth.core.tools
(`find_problems`, the same check every session makes), every other command through the probe's
`Runner` (logged, stderr kept), each command once per run, so one `docker info` serves four rows.
The deciding helpers (`server_found`, `memory_found`, `quota_found`, ...) are pure functions of what
the commands printed: tests feed them recorded outputs.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dogbooth.core.errors import CommandFailed
from dogbooth.core.tools import Runner, find_problems
from dogbooth.render.image import BASE_IMAGE, IMAGE_ARCHITECTURES, Variant, driver_text
from dogbooth.settings.cluster import NodeGroup

Which = Callable[[str], str | None]
GIB = 2**30
TIMEOUT_S = 30  # per command: a hung daemon or endpoint becomes a FIX row, not a hung doctor
DOCKER_INFO = ("docker", "info", "--format", "{{json .}}")
NVIDIA_SMI = ("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
STS = ("aws", "sts", "get-caller-identity", "--output", "json")
AWS_ENV = {"AWS_PAGER": ""}  # AWS CLI v2 pages its output through `less` unless this is empty
START_DOCKER = "start Docker (Docker Desktop: open it; Linux: sudo systemctl start docker)"
NVKIND_SETUP = (
    "sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled; "
    "sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place; "
    "sudo systemctl restart docker (as NVIDIA's nvkind README and docs/kind.md say)"
)
AWS_CREDENTIALS = "https://docs.aws.amazon.com/cli/latest/userguide/cli-chap-configure.html"
NEEDS_CREDENTIALS = "needs AWS credentials: see the aws identity row"


class NeedsFix(Exception):
    """A check did not pass; the message says what to do."""


@dataclass(frozen=True)
class Check:
    name: str
    would: str  # what a dry run prints: what is checked, and how
    test: Callable[[Probe], str]  # returns what it found; raises NeedsFix


def _free_bytes(path: str) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


@dataclass
class Probe:
    """How checks ask the machine; tests pass a fake `runner` and `which`."""

    runner: Runner = field(default_factory=Runner)
    which: Which = shutil.which
    free_bytes: Callable[[str], int | None] = _free_bytes
    _answers: dict[tuple[str, ...], str | CommandFailed] = field(default_factory=dict, repr=False)

    def tool_fix(self, name: str) -> str | None:
        """None when `name` is on PATH and new enough, else what to do (dogbooth.core.tools' words)."""
        problems = find_problems([name], self.which)
        return problems[0].removeprefix(f"{name}: ") if problems else None

    def output(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
        """stdout of `argv`, run once per probe; a failure raises the same CommandFailed every time."""
        key = tuple(argv)
        if key not in self._answers:
            if self.which(argv[0]) is None:
                raise NeedsFix(f"needs {argv[0]}: see its row")
            try:
                self._answers[key] = self.runner.run(argv, timeout_s=TIMEOUT_S, env=env)
            except CommandFailed as e:
                self._answers[key] = e
        answer = self._answers[key]
        if isinstance(answer, CommandFailed):
            raise answer
        return answer


def said(error: CommandFailed) -> str:
    """The tool's own last words: the last non-empty stderr line, shortened."""
    lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit {error.returncode}")[:200]


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _json(text: str, argv: Sequence[str]) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise NeedsFix(f"`{shlex.join(argv)}` printed no JSON: {text[:120]!r}") from None


# --- Docker ------------------------------------------------------------------------------------


def parse_docker_info(text: str) -> dict[str, Any]:
    """The server half of `docker info --format '{{json .}}'`; NeedsFix when no server answered.

    With a format, the docker CLI still prints the JSON when the daemon is down: empty server
    fields plus `ServerErrors` (docker/cli cli/command/system/info.go); newer CLIs also exit 1.
    """
    info: dict[str, Any] = _json(text, DOCKER_INFO)
    errors = info.get("ServerErrors") or []
    if errors or not info.get("ServerVersion"):
        why = "; ".join(errors) or "no server version in `docker info`"
        raise NeedsFix(f"{START_DOCKER}: {why}")
    return info


def docker_info(probe: Probe) -> dict[str, Any]:
    try:
        return parse_docker_info(probe.output(DOCKER_INFO))
    except CommandFailed as e:
        raise NeedsFix(f"{START_DOCKER}: {said(e)}") from None


def running_server(probe: Probe) -> dict[str, Any]:
    """`docker info` for the rows after "docker server": that row alone spells out why it failed."""
    try:
        return docker_info(probe)
    except NeedsFix:
        raise NeedsFix("needs a running Docker server: see the docker server row") from None


def server_found(info: Mapping[str, Any], platform: str) -> str:
    os_type, arch = info.get("OSType", ""), info.get("Architecture", "")
    arch = "aarch64" if arch == "arm64" else arch  # the same machine, by Go's name instead of the kernel's
    found = f"Docker {info.get('ServerVersion')}, {os_type}/{arch}, {info.get('NCPU', '?')} CPUs"
    if os_type != "linux":
        raise NeedsFix(f"{found}: switch Docker to Linux containers (the image and the kind nodes are Linux)")
    if platform == "eks" and arch == "aarch64":
        return f"{found}; the linux/amd64 image for EKS builds under emulation (slow, but it works)"
    if arch in IMAGE_ARCHITECTURES:
        return found
    raise NeedsFix(
        f"{found}: the serve image builds for {' and '.join(IMAGE_ARCHITECTURES)} only ({BASE_IMAGE} and the "
        f"ray and torch wheels it installs): use an {' or '.join(IMAGE_ARCHITECTURES)} Docker host"
    )


def memory_found(info: Mapping[str, Any], need: float, breakdown: str) -> str:
    total = int(info.get("MemTotal") or 0)
    if total < need:
        raise NeedsFix(
            f"Docker has {gib(total)}, the profile needs {breakdown} = {gib(need)}: give Docker more memory "
            "(Docker Desktop: Settings > Resources > Memory) and set cluster.kind.memory_budget to match, or "
            "lower the memory limits in the profile's chart section"
        )
    return f"{gib(total)} for Docker >= {breakdown} = {gib(need)} needed"


def disk_found(root: str, free: int | None, variant: Variant) -> str:
    if free is None:
        return (
            f"{root or 'Docker root dir'} is not on this machine (Docker Desktop's VM or a remote host): "
            f"keep {variant.disk_gib} GiB free there for the {variant.name} image"
        )
    if free < variant.disk_gib * GIB:
        raise NeedsFix(
            f"{gib(free)} free under {root}, the {variant.name} image needs {variant.disk_gib} GiB: "
            "free space (docker builder prune; docker image prune) or give Docker a larger disk"
        )
    return f"{gib(free)} free under {root} >= {variant.disk_gib} GiB ({variant.name} image)"


def runtime_found(info: Mapping[str, Any]) -> str:
    default, runtimes = info.get("DefaultRuntime") or "unset", sorted(info.get("Runtimes") or {})
    if default != "nvidia":
        raise NeedsFix(
            f"Docker's default runtime is {default} (runtimes: {', '.join(runtimes) or 'none'}); "
            f"kind-gpu passes the GPU into a node the nvkind way, which needs nvidia as the default: {NVKIND_SETUP}"
        )
    return f"default runtime nvidia (runtimes: {', '.join(runtimes)})"


def docker_checks(platform: str, variant: Variant, memory: tuple[float, str] | None, gpu: bool) -> list[Check]:
    """The rows `docker info` answers: server, memory (kind: `memory` = need and breakdown), disk, GPU runtime."""
    ask = "$ docker info --format '{{json .}}'"
    arch = f"Architecture {' or '.join(IMAGE_ARCHITECTURES)}"
    if platform == "eks":
        arch += " (aarch64: emulated build)"
    checks = [
        Check("docker server", f"{ask}: a server answers, OSType linux, {arch}",
              lambda probe: server_found(docker_info(probe), platform)),
    ]  # fmt: skip
    if memory is not None:
        need, breakdown = memory
        checks.append(Check("docker memory", f"{ask}: MemTotal >= {breakdown} = {gib(need)}",
                            lambda probe: memory_found(running_server(probe), need, breakdown)))  # fmt: skip

    def disk(probe: Probe) -> str:
        root = str(running_server(probe).get("DockerRootDir") or "")
        return disk_found(root, probe.free_bytes(root) if root else None, variant)

    checks.append(Check("docker disk", f"{ask}: free space under DockerRootDir >= {variant.disk_gib} GiB", disk))
    if gpu:
        checks.append(Check("docker gpu runtime", f"{ask}: DefaultRuntime nvidia (nvkind)",
                            lambda probe: runtime_found(running_server(probe))))  # fmt: skip
    return checks


# --- the GPU driver ----------------------------------------------------------------------------


def driver_found(text: str, variant: Variant) -> str:
    """Decide on `nvidia-smi --query-gpu=driver_version --format=csv,noheader` (one line per GPU)."""
    want = variant.min_driver or ()
    versions = [tuple(int(n) for n in re.findall(r"\d+", line)) for line in text.splitlines() if line.strip()]
    if not versions:
        raise NeedsFix("nvidia-smi lists no GPU: check the driver with `nvidia-smi -L`")
    lowest, shown = min(versions), driver_text(want)
    have = driver_text(lowest)
    if lowest < want:
        raise NeedsFix(
            f"NVIDIA driver {have} is older than {shown}, the oldest for CUDA {variant.cuda} "
            f"(image {variant.name}): upgrade the driver (https://www.nvidia.com/drivers)"
        )
    return f"driver {have} on {len(versions)} GPU(s) >= {shown} (CUDA {variant.cuda}, image {variant.name})"


def driver_check(variant: Variant) -> Check:
    want = driver_text(variant.min_driver or ())

    def test(probe: Probe) -> str:
        if probe.which(NVIDIA_SMI[0]) is None:
            raise NeedsFix(f"no nvidia-smi: install the NVIDIA driver >= {want} (https://www.nvidia.com/drivers)")
        try:
            return driver_found(probe.output(NVIDIA_SMI), variant)
        except CommandFailed as e:
            raise NeedsFix(f"nvidia-smi failed ({said(e)}): load or reinstall the NVIDIA driver >= {want}") from None

    return Check("gpu driver", f"$ {shlex.join(NVIDIA_SMI)}: every GPU's driver >= {want} (CUDA {variant.cuda})", test)


# --- AWS ---------------------------------------------------------------------------------------


def identity(probe: Probe) -> dict[str, Any]:
    try:
        found: dict[str, Any] = _json(probe.output(STS, env=AWS_ENV), STS)
    except CommandFailed as e:
        raise NeedsFix(
            f"no usable AWS credentials ({said(e)}): `aws configure sso` and `aws sso login`, or export "
            f"AWS_PROFILE; {AWS_CREDENTIALS}"
        ) from None
    return found


def identity_check() -> Check:
    def test(probe: Probe) -> str:
        found = identity(probe)
        return f"account {found.get('Account')} as {found.get('Arn')}"

    return Check("aws identity", f"$ {shlex.join(STS)}: credentials work", test)


def _aws(probe: Probe, argv: Sequence[str]) -> Any:
    """Parsed JSON of an aws call; NeedsFix without credentials, CommandFailed when the call fails."""
    try:
        identity(probe)
    except NeedsFix:
        raise NeedsFix(NEEDS_CREDENTIALS) from None
    return _json(probe.output(argv, env=AWS_ENV), argv)


def aws_json(probe: Probe, argv: Sequence[str]) -> Any:
    try:
        return _aws(probe, argv)
    except CommandFailed as e:
        raise NeedsFix(f"`{shlex.join(argv[:3])}` failed: {said(e)}") from None


def offerings_argv(region: str, types: Sequence[str]) -> list[str]:
    values = f"Name=instance-type,Values={','.join(types)}"
    return ["aws", "ec2", "describe-instance-type-offerings", "--location-type", "region", "--filters", values,
            "--region", region, "--output", "json"]  # fmt: skip


def offerings_found(doc: Mapping[str, Any], region: str, types: Sequence[str]) -> str:
    offered = {o.get("InstanceType") for o in doc.get("InstanceTypeOfferings") or []}
    missing = [t for t in types if t not in offered]
    if missing:
        raise NeedsFix(
            f"{', '.join(missing)} not offered in {region}: set cluster.eks.region (or export DOGBOOTH_EKS_REGION) "
            f"to a region that has it; check one with `{shlex.join(offerings_argv('<region>', missing))}`"
        )
    return f"{', '.join(types)} offered in {region}"


def offering_check(region: str, types: Sequence[str]) -> Check:
    argv = offerings_argv(region, types)
    return Check("ec2 offering", f"$ {shlex.join(argv)}: {', '.join(types)} listed",
                 lambda probe: offerings_found(aws_json(probe, argv), region, types))  # fmt: skip


@dataclass(frozen=True)
class Quota:
    code: str
    name: str  # as the Service Quotas console and `get-service-quota` name it


G_AND_VT = Quota("L-DB2E81BA", "Running On-Demand G and VT instances")
STANDARD = Quota("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances")


def quota_for(instance_type: str) -> Quota | None:
    """The vCPU quota an on-demand instance type counts against; None for families we do not map."""
    family = instance_type.split(".")[0]
    if family.startswith(("g", "vt")):
        return G_AND_VT
    if family.startswith(("inf", "hpc", "mac", "trn")) or family[:1] not in set("acdhimrtz"):
        return None
    return STANDARD


def quota_argv(code: str, region: str, *, default: bool = False) -> list[str]:
    verb = "get-aws-default-service-quota" if default else "get-service-quota"
    return ["aws", "service-quotas", verb, "--service-code", "ec2", "--quota-code", code, "--region", region,
            "--output", "json"]  # fmt: skip


def vcpus_argv(region: str, types: Sequence[str]) -> list[str]:
    return ["aws", "ec2", "describe-instance-types", "--instance-types", *types, "--region", region, "--output", "json"]


def vcpus_found(doc: Mapping[str, Any]) -> dict[str, int]:
    """Instance type -> default vCPUs, from `aws ec2 describe-instance-types`."""
    return {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in doc.get("InstanceTypes") or []}


def quota_value(probe: Probe, quota: Quota, region: str) -> float:
    """The applied quota; AWS's default where none was ever applied (NoSuchResourceException)."""
    try:
        doc = _aws(probe, quota_argv(quota.code, region))
    except CommandFailed as e:
        if "NoSuchResource" not in e.stderr:
            raise NeedsFix(f"could not read quota {quota.code} in {region}: {said(e)}") from None
        doc = aws_json(probe, quota_argv(quota.code, region, default=True))
    return float(doc["Quota"]["Value"])


def quota_found(value: float, quota: Quota, group: NodeGroup, vcpus: int, region: str) -> str:
    need = group.max_size * vcpus
    what = f"nodegroup {group.name} max {group.max_size} x {vcpus} vCPUs ({group.instance_type}) = {need}"
    if value < need:
        raise NeedsFix(
            f"{quota.code} ({quota.name}) is {value:g} vCPUs in {region}, below {what}: raise it with "
            f"`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {quota.code} "
            f"--desired-value {need} --region {region}` or at "
            f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{quota.code}"
        )
    return f"{quota.code} {value:g} vCPUs >= {what} (other running instances in {region} count too)"


def quota_check(region: str, group: NodeGroup, all_types: Sequence[str]) -> Check:
    """`group.max_size` x its instance type's vCPUs against the quota that type counts against."""
    quota, name = quota_for(group.instance_type), f"ec2 quota {group.name}"
    if quota is None:
        unmapped = f"no quota check for {group.instance_type}'s family: see the Service Quotas console"
        return Check(name, f"no vCPU quota mapped for {group.instance_type}", lambda _: unmapped)
    vcpus_call = vcpus_argv(region, all_types)
    would = (
        f"$ {shlex.join(quota_argv(quota.code, region))}: {quota.name} >= max_size {group.max_size} x vCPUs of "
        f"{group.instance_type} ($ {shlex.join(vcpus_call)})"
    )

    def test(probe: Probe) -> str:
        vcpus = vcpus_found(aws_json(probe, vcpus_call)).get(group.instance_type)
        if vcpus is None:
            raise NeedsFix(f"`aws ec2 describe-instance-types` does not list {group.instance_type} in {region}")
        return quota_found(quota_value(probe, quota, region), quota, group, vcpus, region)

    return Check(name, would, test)
