"""`nox -s doctor`: the preflight table, its decisions on recorded command outputs, and where it runs.

The outputs below are written by hand from the documented formats: `docker info --format '{{json .}}'`
(the Engine API's system.Info fields, docker/cli's ServerErrors), `nvidia-smi --query-gpu=driver_version
--format=csv,noheader` (one version per GPU), and the AWS CLI's JSON for `sts get-caller-identity`,
`ec2 describe-instance-type-offerings`, `ec2 describe-instance-types` and `service-quotas
get-service-quota`. A fake runner answers them; a fake `which` says which tools exist.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import pytest
from conftest import make_test_profile

from dogbooth.core.errors import CommandFailed
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import TOOLS, Runner
from dogbooth.platforms import dispatch, doctor
from dogbooth.platforms import doctorchecks as dc
from dogbooth.render.image import VARIANTS
from dogbooth.settings import profiles
from dogbooth.settings.chart import ImageSettings

GIB = 2**30
DOCKER_INFO = dc.DOCKER_INFO
# A daemon on Linux (the Engine API's system.Info; only the fields the doctor reads, plus a few).
DOCKER_INFO_OK: dict[str, Any] = {
    "ID": "7TRN:IPZB:QYBB:VPBQ",
    "Containers": 3,
    "Images": 12,
    "Driver": "overlay2",
    "OSType": "linux",
    "OperatingSystem": "Ubuntu 24.04 LTS",
    "Architecture": "x86_64",
    "NCPU": 8,
    "MemTotal": 16 * GIB,
    "DockerRootDir": "/var/lib/docker",
    "ServerVersion": "27.3.1",
    "Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}},
    "DefaultRuntime": "runc",
    "ClientInfo": {"Version": "27.3.1", "Context": "default", "Plugins": []},
}
# With a format, docker/cli prints the JSON even when no daemon answers: empty server fields and ServerErrors.
DOCKER_INFO_DOWN = {
    "ID": "",
    "OSType": "",
    "Architecture": "",
    "NCPU": 0,
    "MemTotal": 0,
    "DockerRootDir": "",
    "ServerVersion": "",
    "ServerErrors": [
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    ],
    "ClientInfo": {"Version": "28.2.2", "Context": "default", "Plugins": []},
}
STS = {"UserId": "AIDASAMPLEUSERID", "Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/dev"}
REGION = "us-west-2"
TYPES = ["g5.xlarge", "m6i.xlarge"]


def offerings(*types: str) -> dict[str, Any]:
    return {"InstanceTypeOfferings": [{"InstanceType": t, "LocationType": "region", "Location": REGION} for t in types]}


INSTANCE_TYPES = {
    "InstanceTypes": [
        {
            "InstanceType": "g5.xlarge",
            "VCpuInfo": {"DefaultVCpus": 4, "DefaultCores": 2, "DefaultThreadsPerCore": 2},
            "MemoryInfo": {"SizeInMiB": 16384},
            "GpuInfo": {"Gpus": [{"Name": "A10G", "Manufacturer": "NVIDIA", "Count": 1}]},
        },
        {
            "InstanceType": "m6i.xlarge",
            "VCpuInfo": {"DefaultVCpus": 4, "DefaultCores": 2, "DefaultThreadsPerCore": 2},
            "MemoryInfo": {"SizeInMiB": 16384},
        },
    ]
}


def quota(code: str, value: float) -> dict[str, Any]:
    name = {dc.G_AND_VT.code: dc.G_AND_VT.name, dc.STANDARD.code: dc.STANDARD.name}[code]
    return {
        "Quota": {
            "ServiceCode": "ec2",
            "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaArn": f"arn:aws:servicequotas:{REGION}:123456789012:ec2/{code}",
            "QuotaCode": code,
            "QuotaName": name,
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


Answer = str | dict[str, Any] | CommandFailed


@dataclass
class FakeRunner(Runner):
    """Answers recorded outputs by argv; notes every call and the env it was given."""

    answers: dict[tuple[str, ...], Answer] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], Mapping[str, str] | None]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **_: Any) -> str:  # type: ignore[override]
        key = tuple(argv)
        self.calls.append((key, env))
        if key not in self.answers:
            raise CommandFailed(list(key), 127, f"no recorded answer for {key}")
        answer = self.answers[key]
        if isinstance(answer, CommandFailed):
            raise answer
        return answer if isinstance(answer, str) else json.dumps(answer)

    def ran(self, *prefix: str) -> int:
        return sum(1 for argv, _ in self.calls if argv[: len(prefix)] == prefix)


def probe(
    answers: dict[tuple[str, ...], Answer], *, have: Sequence[str] = (), free: int | None = 100 * GIB
) -> dc.Probe:
    return dc.Probe(
        runner=FakeRunner(answers=answers),
        which=lambda name: f"/usr/bin/{name}" if name in have else None,
        free_bytes=lambda _: free,
    )


def rows_of(profile_name: str, p: dc.Probe, command: str = "up", *, tools: bool = False) -> dict[str, doctor.Row]:
    """The doctor's rows for a shipped profile; the tool rows left out unless `tools` (they run real binaries)."""
    checks = [c for c in doctor.checks_for(profiles.load(profile_name), command) if tools or c.name not in TOOLS]
    return {row.check: row for row in doctor.run_checks(checks, p)}


def aws_answers(*, gpu_quota: float = 16, standard_quota: float = 32) -> dict[tuple[str, ...], Answer]:
    return {
        dc.STS: STS,
        tuple(dc.offerings_argv(REGION, TYPES)): offerings(*TYPES),
        tuple(dc.vcpus_argv(REGION, TYPES)): INSTANCE_TYPES,
        tuple(dc.quota_argv(dc.G_AND_VT.code, REGION)): quota(dc.G_AND_VT.code, gpu_quota),
        tuple(dc.quota_argv(dc.STANDARD.code, REGION)): quota(dc.STANDARD.code, standard_quota),
    }


@pytest.fixture(autouse=True)
def _profile_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOGBOOTH_EKS_REGION", "DOGBOOTH_EKS_CLUSTER", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


# --- the table and the tools -------------------------------------------------------------------


def test_kind_cpu_without_tools_gets_a_row_and_an_install_link_per_missing_tool() -> None:
    p = probe({})
    rows = rows_of("kind-cpu", p, "dev", tools=True)
    assert list(rows) == [
        "docker", "kind", "ctlptl", "kubectl", "helm", "tilt",
        "docker server", "docker memory", "docker disk", "kube context",
    ]  # fmt: skip
    for tool in ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt"):
        assert rows[tool].fix == f"not found on PATH; install: {TOOLS[tool].install}"
    assert rows["docker server"].fix == "needs docker: see its row"
    assert (
        rows["docker memory"].fix
        == rows["docker disk"].fix
        == "needs a running Docker server: see the docker server row"
    )
    assert rows["kube context"].fix == "needs kind: see its row"
    assert p.runner.calls == []  # type: ignore[attr-defined]
    text = doctor.table(list(rows.values()))
    assert text.splitlines()[0].split() == ["CHECK", "RESULT"]
    assert "\nkind           FIX: not found on PATH; install: https://kind.sigs.k8s.io/" in text
    assert text.splitlines()[-1] == "0 ok, 10 to fix"


def _version(parts: Sequence[int]) -> str:
    return ".".join(map(str, parts))


def test_installed_tools_are_ok_rows_and_an_old_one_says_upgrade(tmp_path: Path) -> None:
    kind_min, tilt_min = TOOLS["kind"].minimum, TOOLS["tilt"].minimum
    tilt_old = (*tilt_min[:-1], tilt_min[-1] - 1)
    versions = {"kind": f"kind version {_version(kind_min)}.0", "tilt": f"v{_version(tilt_old)}, built 2025-01-01"}
    for tool, version in versions.items():
        (tmp_path / tool).write_text(f'#!/bin/sh\necho "{version}"\n')
        (tmp_path / tool).chmod(0o755)
    p = dc.Probe(runner=FakeRunner(), which=lambda name: str(tmp_path / name) if name in versions else None)
    rows = doctor.run_checks([doctor.tool_check("kind"), doctor.tool_check("tilt")], p)
    too_old = f"tilt {_version(tilt_old)} is too old (need >= {_version(tilt_min)}); upgrade: {TOOLS['tilt'].install}"
    assert rows[0] == doctor.Row("kind", None, f"{_version(kind_min)} or newer")
    assert rows[1].fix == too_old
    assert doctor.table(rows).splitlines()[1:3] == [
        f"kind   ok   {_version(kind_min)} or newer",
        f"tilt   FIX: {too_old}",
    ]


def test_preflight_raises_one_error_listing_every_fix() -> None:
    with pytest.raises(doctor.PreflightFailed) as info:
        doctor.report(profiles.load("kind-cpu"), "up", probe=probe({}))
    message = str(info.value)
    assert message.startswith("9 preflight check(s) need a fix for profile kind-cpu; nothing was created:")
    assert f"\n  - ctlptl: not found on PATH; install: {TOOLS['ctlptl'].install}" in message
    assert "  - tilt:" not in message  # `up` does not need Tilt, only `dev` does


# --- Docker ------------------------------------------------------------------------------------


def test_docker_rows_from_one_recorded_docker_info() -> None:
    p = probe({DOCKER_INFO: DOCKER_INFO_OK}, have=["docker"], free=120 * GIB)
    rows = rows_of("kind-cpu", p)
    assert rows["docker server"] == doctor.Row("docker server", None, "Docker 27.3.1, linux/x86_64, 8 CPUs")
    need, breakdown = doctor.memory_need(profiles.load("kind-cpu"))
    assert rows["docker memory"].found == f"16.0 GiB for Docker >= {breakdown} = {dc.gib(need)} needed"
    assert rows["docker disk"].found == "120.0 GiB free under /var/lib/docker >= 15 GiB (cpu image)"
    assert p.runner.ran(*DOCKER_INFO) == 1  # type: ignore[attr-defined]  # asked once, read by three rows


def test_too_little_memory_or_disk_for_the_profile_is_a_fix() -> None:
    need, breakdown = doctor.memory_need(profiles.load("kind-gpu"))
    small = {**DOCKER_INFO_OK, "MemTotal": int(need) - GIB}
    rows = rows_of("kind-gpu", probe({DOCKER_INFO: small}, have=["docker"], free=20 * GIB))
    assert rows["docker memory"].fix == (
        f"Docker has {dc.gib(need - GIB)}, the profile needs {breakdown} = {dc.gib(need)}: give Docker more memory "
        "(Docker Desktop: Settings > Resources > Memory) and set cluster.kind.memory_budget to match, or "
        "lower the memory limits in the profile's chart section"
    )
    assert rows["docker disk"].fix is not None
    assert rows["docker disk"].fix.startswith("20.0 GiB free under /var/lib/docker, the cu126 image needs 30 GiB")


def test_the_memory_need_is_the_reserve_plus_every_raycluster_a_rebuild_runs() -> None:
    # kind-cpu: 3 GiB reserve + one RayCluster (upgradeStrategy None) of head 2560Mi + 1 worker 2560Mi.
    assert doctor.memory_need(profiles.load("kind-cpu")) == (
        8 * GIB,
        "reserve 3.0 GiB + 1 RayCluster(s) x 5.0 GiB (head + workers, limits)",
    )


def test_a_docker_root_dir_off_this_machine_is_not_measured() -> None:
    found = dc.disk_found("/var/lib/docker", None, VARIANTS["cpu"])
    assert found.startswith("/var/lib/docker is not on this machine (Docker Desktop's VM or a remote host)")


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps(DOCKER_INFO_DOWN),  # older CLIs: the JSON with ServerErrors, exit 0
        CommandFailed(list(DOCKER_INFO), 1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                      "Is the docker daemon running?"),  # newer CLIs exit 1 as well
    ],
)  # fmt: skip
def test_no_docker_server_is_one_fix_and_the_rows_after_it_point_to_it(answer: Answer) -> None:
    rows = rows_of("kind-cpu", probe({DOCKER_INFO: answer}, have=["docker"]))
    assert rows["docker server"].fix == (
        "start Docker (Docker Desktop: open it; Linux: sudo systemctl start docker): Cannot connect to the "
        "Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    )
    assert rows["docker memory"].fix == "needs a running Docker server: see the docker server row"


def test_the_architecture_decides_per_platform() -> None:
    arm = {**DOCKER_INFO_OK, "Architecture": "aarch64"}
    assert dc.server_found(arm, "kind").startswith("Docker ") and "linux/aarch64" in dc.server_found(arm, "kind")
    with pytest.raises(dc.NeedsFix, match="the serve image builds for x86_64 and aarch64 only"):
        dc.server_found({**DOCKER_INFO_OK, "Architecture": "ppc64le"}, "kind")
    assert dc.server_found(arm, "eks").endswith(
        "the linux/amd64 image for EKS builds under emulation (slow, but it works)"
    )
    with pytest.raises(dc.NeedsFix, match="switch Docker to Linux containers"):
        dc.server_found({**DOCKER_INFO_OK, "OSType": "windows"}, "eks")


def test_kind_gpu_needs_nvidia_as_dockers_default_runtime() -> None:
    rows = rows_of("kind-gpu", probe({DOCKER_INFO: DOCKER_INFO_OK}, have=["docker"]))
    fix = rows["docker gpu runtime"].fix or ""
    assert fix.startswith("Docker's default runtime is runc (runtimes: io.containerd.runc.v2, runc)")
    assert "sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled" in fix
    nvidia = {**DOCKER_INFO_OK, "DefaultRuntime": "nvidia", "Runtimes": {"nvidia": {}, "runc": {}}}
    assert dc.runtime_found(nvidia) == "default runtime nvidia (runtimes: nvidia, runc)"


# --- the GPU driver ----------------------------------------------------------------------------


def test_the_variants_table_is_the_one_place_for_cuda_and_driver_facts() -> None:
    assert set(VARIANTS) == set(get_args(ImageSettings.model_fields["variant"].annotation))
    assert (VARIANTS["cu126"].cuda, VARIANTS["cu126"].min_driver) == ("12.6", (560, 35, 5))
    assert VARIANTS["cpu"].cuda is None and VARIANTS["cpu"].disk_gib < VARIANTS["cu126"].disk_gib
    for name in profiles.available():
        chart = profiles.load(name).chart
        assert chart is None or chart.image.variant in VARIANTS


def test_the_gpu_driver_is_checked_against_the_images_cuda() -> None:
    smi = dc.NVIDIA_SMI
    rows = rows_of("kind-gpu", probe({smi: "570.86.15\n570.86.15\n"}, have=["nvidia-smi"]))
    assert rows["gpu driver"].found == "driver 570.86.15 on 2 GPU(s) >= 560.35.05 (CUDA 12.6, image cu126)"
    old = rows_of("kind-gpu", probe({smi: "550.54.14\n"}, have=["nvidia-smi"]))["gpu driver"].fix
    assert old == (
        "NVIDIA driver 550.54.14 is older than 560.35.05, the oldest for CUDA 12.6 (image cu126): "
        "upgrade the driver (https://www.nvidia.com/drivers)"
    )
    none = rows_of("kind-gpu", probe({}))["gpu driver"].fix
    assert none == "no nvidia-smi: install the NVIDIA driver >= 560.35.05 (https://www.nvidia.com/drivers)"
    failed = CommandFailed(
        list(smi), 9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    )
    assert "load or reinstall the NVIDIA driver" in (
        rows_of("kind-gpu", probe({smi: failed}, have=["nvidia-smi"]))["gpu driver"].fix or ""
    )
    assert "gpu driver" not in rows_of("kind-cpu", probe({}))


# --- AWS ---------------------------------------------------------------------------------------


def test_eks_identity_offering_and_both_quotas_from_recorded_aws_answers() -> None:
    # Karpenter's GPU NodePool may grow to 5 single-GPU nodes: 4 serve workers + 1 notebook server.
    p = probe(aws_answers(gpu_quota=20, standard_quota=32), have=["aws"])
    rows = rows_of("eks", p)
    assert rows["aws identity"].found == "account 123456789012 as arn:aws:iam::123456789012:user/dev"
    assert rows["ec2 offering"].found == "g5.xlarge, m6i.xlarge offered in us-west-2"
    assert rows["ec2 quota gpu-g5"].found == (
        "L-DB2E81BA 20 vCPUs >= nodegroup gpu-g5 max 5 x 4 vCPUs (g5.xlarge) = 20 "
        "(other running instances in us-west-2 count too)"
    )
    assert rows["ec2 quota system"].found.startswith("L-1216C47A 32 vCPUs >= nodegroup system max 3 x 4 vCPUs")
    runner: FakeRunner = p.runner  # type: ignore[assignment]
    assert runner.ran("aws", "sts") == 1 and runner.ran("aws", "ec2", "describe-instance-types") == 1
    assert all(env == {"AWS_PAGER": ""} for argv, env in runner.calls if argv[0] == "aws")


def test_a_short_quota_fails_with_the_command_and_the_console_link_to_raise_it() -> None:
    rows = rows_of("eks", probe(aws_answers(gpu_quota=0, standard_quota=5), have=["aws"]))
    assert rows["ec2 quota gpu-g5"].fix == (
        "L-DB2E81BA (Running On-Demand G and VT instances) is 0 vCPUs in us-west-2, below nodegroup gpu-g5 max 5 "
        "x 4 vCPUs (g5.xlarge) = 20: raise it with `aws service-quotas request-service-quota-increase "
        "--service-code ec2 --quota-code L-DB2E81BA --desired-value 20 --region us-west-2` or at "
        "https://us-west-2.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-DB2E81BA"
    )
    standard = rows["ec2 quota system"].fix or ""
    assert "L-1216C47A (Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances) is 5 vCPUs" in standard
    assert "--desired-value 12 --region us-west-2" in standard


def test_a_quota_never_applied_falls_back_to_the_aws_default() -> None:
    answers = aws_answers()
    answers[tuple(dc.quota_argv(dc.G_AND_VT.code, REGION))] = CommandFailed(
        [], 254, "An error occurred (NoSuchResourceException) when calling the GetServiceQuota operation: x"
    )
    answers[tuple(dc.quota_argv(dc.G_AND_VT.code, REGION, default=True))] = quota(dc.G_AND_VT.code, 64)
    assert rows_of("eks", probe(answers, have=["aws"]))["ec2 quota gpu-g5"].found.startswith("L-DB2E81BA 64 vCPUs")


def test_without_credentials_the_identity_row_says_how_and_the_aws_rows_point_to_it() -> None:
    no_creds = CommandFailed(
        list(dc.STS), 253, '\nUnable to locate credentials. You can configure credentials by running "aws configure".\n'
    )
    p = probe({dc.STS: no_creds}, have=["aws"])
    rows = rows_of("eks", p)
    assert (rows["aws identity"].fix or "").startswith("no usable AWS credentials (Unable to locate credentials.")
    assert dc.AWS_CREDENTIALS in (rows["aws identity"].fix or "")
    for name in ("ec2 offering", "ec2 quota gpu-g5", "ec2 quota system"):
        assert rows[name].fix == "needs AWS credentials: see the aws identity row"
    assert p.runner.calls == [(dc.STS, {"AWS_PAGER": ""})]  # type: ignore[attr-defined]


def test_a_region_without_g5_says_so() -> None:
    answers = {**aws_answers(), tuple(dc.offerings_argv(REGION, TYPES)): offerings("m6i.xlarge")}
    fix = rows_of("eks", probe(answers, have=["aws"]))["ec2 offering"].fix or ""
    assert fix.startswith("g5.xlarge not offered in us-west-2: set cluster.eks.region (or export DOGBOOTH_EKS_REGION)")


def test_instance_families_map_to_their_vcpu_quotas() -> None:
    assert dc.quota_for("g5.xlarge") is dc.G_AND_VT and dc.quota_for("vt1.3xlarge") is dc.G_AND_VT
    assert dc.quota_for("m6i.xlarge") is dc.STANDARD and dc.quota_for("t3.large") is dc.STANDARD
    assert dc.quota_for("p4d.24xlarge") is None and dc.quota_for("inf2.xlarge") is None


# --- kube context ------------------------------------------------------------------------------


def test_the_kind_context_exists_or_will_be_created() -> None:
    clusters, contexts = ("kind", "get", "clusters"), ("kubectl", "config", "get-contexts", "-o", "name")
    have = ["kind", "kubectl"]
    fresh = rows_of("kind-cpu", probe({clusters: ""}, have=have))["kube context"]
    assert fresh.found == "kind-dogbooth: cluster dogbooth does not exist yet; ctlptl apply creates it"
    there = rows_of("kind-cpu", probe({clusters: "dogbooth\n", contexts: "kind-dogbooth\nprod\n"}, have=have))
    assert there["kube context"].found == "kind-dogbooth exists; ctlptl apply updates it in place"
    lost = rows_of("kind-cpu", probe({clusters: "dogbooth\n", contexts: "prod\n"}, have=have))["kube context"]
    assert (
        lost.fix == "cluster dogbooth exists but no kube context kind-dogbooth: kind export kubeconfig --name dogbooth"
    )


def test_eks_uses_the_private_kubeconfig() -> None:
    row = rows_of("eks", probe({}))["kubeconfig"]
    assert row.fix is None and "kubeconfig-eks-dogbooth-us-west-2" in row.found
    assert "~/.kube/config is left alone" in row.found


# --- local -------------------------------------------------------------------------------------


def test_local_checks_pass_here_and_a_busy_port_is_a_fix(tmp_path: Path) -> None:
    profile = profiles.load_file(make_test_profile(tmp_path, "doctor-local"))
    rows = doctor.run_checks(doctor.checks_for(profile, "up"), dc.Probe(runner=FakeRunner()))
    assert [(row.check, row.fix) for row in rows] == [
        ("python", None),
        ("packages", None),
        ("ports", None),
        ("disk", None),
    ]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", profile.serve.http_port))
        blocker.listen()
        fix = doctor.run_checks(doctor.checks_for(profile, "up"), dc.Probe())[2].fix or ""
    assert fix.startswith(f"serve.http_port {profile.serve.http_port} is in use by pid {os.getpid()}")


# --- where the doctor runs ---------------------------------------------------------------------


def _cli(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOGBOOTH_EKS"))}
    env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "dogbooth", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_doctor_kind_cpu_exits_nonzero_with_a_row_per_missing_tool(tmp_path: Path) -> None:
    result = _cli("doctor", "--profile", "kind-cpu", path=str(tmp_path))
    assert result.returncode == 1, result.stderr
    for tool in ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt"):
        assert f"\n{tool:<15}FIX: not found on PATH; install: {TOOLS[tool].install}\n" in result.stdout, tool
    assert result.stdout.rstrip().endswith("0 ok, 10 to fix")
    assert result.stderr.count("error:") == 1


def test_doctor_local_exits_zero_here(tmp_path: Path) -> None:
    path = make_test_profile(tmp_path, "doctor-cli")
    result = _cli("doctor", "--profile", str(path), path=os.environ["PATH"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("4 ok, 0 to fix")


def test_a_dry_run_prints_the_checks_it_would_run_before_the_plan_and_runs_none(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    for tool in ("aws", "docker", "kubectl", "helm", "eksctl", "nvidia-smi"):
        (tmp_path / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        (tmp_path / tool).chmod(0o755)
    cloud = _cli("cloud", "--dry-run", path=str(tmp_path))
    assert cloud.returncode == 0, cloud.stderr
    out = cloud.stdout
    assert out.index("preflight for `up` on profile eks: 12 checks") < out.index("plan `cloud` for profile eks")
    for needle in ("get-caller-identity", "--quota-code L-DB2E81BA", "--quota-code L-1216C47A",
                   "describe-instance-type-offerings", "describe-instance-types"):  # fmt: skip
        assert needle in out[: out.index("plan `cloud`")], needle
    dev = _cli("dev", "--profile", "kind-gpu", "--dry-run", path=str(tmp_path))
    assert dev.returncode == 0, dev.stderr
    assert "gpu driver: $ nvidia-smi --query-gpu=driver_version --format=csv,noheader" in dev.stdout
    assert not calls.exists(), calls.read_text()


def test_up_and_dev_stop_at_the_doctor_before_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    for command in ("up", "dev"):
        with pytest.raises(doctor.PreflightFailed, match="nothing was created") as info:
            dispatch.run(command, profiles.load("kind-cpu"))
        assert ("\n  - tilt: not found on PATH" in str(info.value)) == (command == "dev")


def test_the_nox_session_calls_the_doctor() -> None:
    tree = ast.parse((REPO_ROOT / "noxfile.py").read_text())
    session = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "doctor")
    assert ast.get_docstring(session)
    assert "_dogbooth(session, 'doctor')" in ast.unparse(session)
