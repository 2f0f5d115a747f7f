"""The serve image's build, read without Docker (issue 11, defects 1 and 4).

No image can be built here, so these tests read what a build would do: the base services/Dockerfile
starts FROM with the build args a plan or Tilt passes, the platform it builds for, and the `pip`
commands its RUN lines make (run through `sh` with a `pip` that only records its arguments). They
judge that against upstream facts, each kept below with its source:

- rayproject/ray tags are x86_64 unless they end in `-aarch64` (ray-project/ray docker/base-deps/README.md);
  python:3.11-slim-bookworm is published for amd64 and arm64v8, among others
  (docker-library/official-images library/python).
- torch 2.13.0 is on PyTorch's indexes for CPU and CUDA 12.6, 13.0 and 13.2, on x86_64 and aarch64
  (pytorch RELEASE.md, "CUDA Support Matrix" for 2.12 to 2.14); PyPI's torch is the CUDA 13.0 build
  (pytorch/pytorch#177975; its aarch64 wheel requires cuda-toolkit 13.0.3). PyTorch's x86_64 wheels
  carry a `+cpu` / `+cuXYZ` label that outranks PyPI's plain version; its aarch64 CPU wheels carry
  none (pytorch/pytorch#110791), so PyPI next to the CPU index leaves the pick to pip there.
- NVIDIA's CUDA release notes, Table 3 (Linux): 12.6 Update 3 needs driver >= 560.35.05, 12.8 GA
  >= 570.26, 13.0 GA >= 580.65.06.
- KubeRay 1.7 runs `ray start` and its wait-gcs-ready init container under /bin/bash, and probes
  RayService workers with `wget ... | grep success` (ray-project/kuberay v1.7.0,
  ray-operator/controllers/ray/common/pod.go, utils/constant.go BaseWgetHealthCommand).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import dispatch
from dogbooth.platforms import doctorchecks as dc
from dogbooth.render import tilt
from dogbooth.render.chart import CHART_DIR
from dogbooth.render.image import APP_DIR, DOCKERFILE, VARIANTS
from dogbooth.settings import profiles

DOCKER_PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}  # `docker info` Architecture -> build
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
TORCH_ON_PYTORCH_INDEXES = {"cpu": None, "cu126": "12.6", "cu130": "13.0", "cu132": "13.2"}
PYPI_TORCH_CUDA = "13.0"
NVIDIA_MIN_DRIVER = {"12.6": (560, 35, 5), "12.8": (570, 26), "13.0": (580, 65, 6)}
KUBERAY_TOOLS = {"bash", "wget", "grep"}
# What each base ships of KUBERAY_TOOLS: the Ray images install wget (docker/base-deps/Dockerfile);
# Debian's bash and grep are Essential packages, in every Debian image.
BASE_TOOLS = {"rayproject/ray": {"bash", "wget", "grep"}, "python": {"bash", "grep"}}
KIND_PROFILES = ["kind-cpu", "kind-gpu"]
GPU_PROFILES = ["kind-gpu", "eks"]


def published_platforms(image: str) -> set[str]:
    name, _, tag = image.partition(":")
    if name == "rayproject/ray":
        return {"linux/arm64"} if tag.endswith("-aarch64") else {"linux/amd64"}
    if name == "python" and tag.endswith("-slim-bookworm"):
        return {"linux/amd64", "linux/arm64"}
    return set()  # unknown here: a test that needs it fails until its source is added above


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def base_image(dockerfile: str, build_args: dict[str, str]) -> str:
    """The image FROM names (single stage), with ARG defaults and the build args substituted."""
    (line,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.split("\nFROM ", 1)[0], re.M)) | build_args
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], line)


def run_lines(dockerfile: str) -> list[str]:
    """Each RUN's shell command, continuation lines joined; heredoc bodies left out."""
    runs, lines = [], iter(dockerfile.splitlines())
    for line in lines:
        if not line.startswith("RUN "):
            continue
        command = line[4:]
        while command.endswith("\\"):
            command = command[:-1] + next(lines)
        if heredoc := re.search(r"<<'?(\w+)'?", command):
            for body in lines:
                if body == heredoc.group(1):
                    break
        runs.append(command)
    return runs


def pip_calls(dockerfile: str, variant: str, tmp_path: Path) -> list[list[str]]:
    """The `pip` argv lists the Dockerfile's RUN lines make for a VARIANT, in order."""
    stubs, log = tmp_path / "bin", tmp_path / "pip.log"
    stubs.mkdir(exist_ok=True)
    log.write_text("")
    (stubs / "pip").write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    (stubs / "python").write_text("#!/bin/sh\nexit 0\n")  # the checks chained after pip
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "VARIANT": variant}
    for command in run_lines(dockerfile):
        if "pip install" in command:
            subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, check=True)
    return [json.loads(line) for line in log.read_text().splitlines()]


def torch_cuda(calls: list[list[str]], arch: str) -> str | None:
    """The CUDA of the torch those calls install (None: CPU); pip keeps the first torch a call installs."""
    call = next(c for c in calls if c[0] == "install" and ("torch" in c or "-r" in c))
    indexes = [call[i + 1] for i, arg in enumerate(call) if arg in ("--index-url", "--extra-index-url")]
    if "--index-url" not in call:
        indexes.insert(0, "pypi")
    pytorch = [u.removeprefix(PYTORCH_INDEX).rstrip("/") for u in indexes if u.startswith(PYTORCH_INDEX)]
    if not pytorch:
        return PYPI_TORCH_CUDA
    assert len(pytorch) == 1 and pytorch[0] in TORCH_ON_PYTORCH_INDEXES, f"no torch 2.13.0 on {indexes}"
    if "pypi" in indexes and arch != "x86_64":
        pytest.fail(f"on {arch}, PyPI's torch and {pytorch[0]}'s share a version: pip may take either")
    return TORCH_ON_PYTORCH_INDEXES[pytorch[0]]


def plan_build(name: str) -> list[str]:
    """The `docker build` argv of the profile's `up` plan (kind: local registry; eks: ECR)."""
    plan = dispatch.build_plan("up", profiles.load(name))
    (shown,) = [s.detail[0] for s in plan.steps if s.detail and s.detail[0].startswith("$ docker build")]
    return shlex.split(shown[2:])


def build_args(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")


def build_platform(argv: list[str], server_arch: str) -> str:
    """What `docker build` builds for: --platform, else the Docker server's own architecture."""
    return argv[argv.index("--platform") + 1] if "--platform" in argv else DOCKER_PLATFORM[server_arch]


# --- defect 1: arm64 Docker hosts (Apple Silicon) ---------------------------------------------------


@pytest.mark.parametrize("server_arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("name", KIND_PROFILES)
def test_the_kind_up_build_is_for_the_docker_servers_own_architecture(
    dockerfile: str, name: str, server_arch: str
) -> None:
    argv = plan_build(name)
    target = build_platform(argv, server_arch)
    assert target == DOCKER_PLATFORM[server_arch], "kind's nodes run the Docker server's architecture"
    base = base_image(dockerfile, build_args(argv))
    assert target in published_platforms(base), f"{base} has no {target} image: it would build under emulation"


@pytest.mark.parametrize("server_arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("name", KIND_PROFILES)
def test_tilts_build_is_for_the_docker_servers_own_architecture(dockerfile: str, name: str, server_arch: str) -> None:
    config = tilt.tilt_config(profiles.load(name))
    tiltfile = (REPO_ROOT / "Tiltfile").read_text()
    docker_build = tiltfile[tiltfile.index("docker_build(") : tiltfile.index("k8s_yaml(")]
    assert "platform" not in docker_build and "platform" not in config  # Tilt then builds natively
    assert (REPO_ROOT / config["dockerfile"]).read_text() == dockerfile
    base = base_image(dockerfile, config["build_args"])
    assert DOCKER_PLATFORM[server_arch] in published_platforms(base)


def test_eks_always_builds_linux_amd64_from_a_base_published_for_it(dockerfile: str) -> None:
    argv = plan_build("eks")
    assert build_platform(argv, "aarch64") == build_platform(argv, "x86_64") == "linux/amd64"  # g5/g6 are x86_64
    assert "linux/amd64" in published_platforms(base_image(dockerfile, build_args(argv)))


def test_the_doctor_accepts_every_architecture_the_image_builds_for() -> None:
    info = {"OSType": "linux", "ServerVersion": "28.3.2", "NCPU": 8}
    for arch in ("x86_64", "aarch64", "arm64"):
        assert dc.server_found({**info, "Architecture": arch}, "kind").startswith("Docker 28.3.2, linux/")
    assert "emulation" in dc.server_found({**info, "Architecture": "aarch64"}, "eks")
    with pytest.raises(dc.NeedsFix, match="use an x86_64 or aarch64 Docker host"):
        dc.server_found({**info, "Architecture": "s390x"}, "kind")


# --- defect 4: the GPU image holds the CUDA its name says -------------------------------------------


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_installs_the_torch_build_its_name_says(
    dockerfile: str, variant: str, arch: str, tmp_path: Path
) -> None:
    cuda = torch_cuda(pip_calls(dockerfile, variant, tmp_path), arch)
    assert cuda == VARIANTS[variant].cuda, f"VARIANT={variant} installs torch for CUDA {cuda}"
    assert variant == ("cpu" if cuda is None else "cu" + cuda.replace(".", ""))


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_the_gpu_profiles_variant_is_published_and_its_driver_minimum_is_nvidias(dockerfile: str, name: str) -> None:
    chart = profiles.load(name).chart
    assert chart is not None and chart.image.tag.endswith(chart.image.variant)
    variant = VARIANTS[chart.image.variant]
    assert variant.name in TORCH_ON_PYTORCH_INDEXES, f"PyTorch publishes no torch 2.13.0 for {variant.name}"
    assert variant.cuda == TORCH_ON_PYTORCH_INDEXES[variant.name] and variant.cuda is not None
    assert variant.min_driver == NVIDIA_MIN_DRIVER[variant.cuda]
    assert variant.torch_index == PYTORCH_INDEX + variant.name
    # The CUDA libraries come with torch's wheels: a base with its own CUDA toolkit is gigabytes unused.
    base = base_image(dockerfile, {"VARIANT": variant.name})
    assert not re.search(r"-cu\d+|-gpu|nvidia/cuda", base), base


def test_the_eks_ami_driver_meets_the_gpu_minimum() -> None:
    # awslabs/amazon-eks-ami templates/al2023/variables-default.json: nvidia_driver_major_version 580.
    chart = profiles.load("eks").chart
    assert chart is not None
    minimum = VARIANTS[chart.image.variant].min_driver
    assert minimum is not None and minimum[0] < 580, f"a 580.x driver may be older than {minimum}"


def test_the_build_fails_when_torch_is_not_the_variants_build(dockerfile: str) -> None:
    assert "torch.version.cuda == cuda" in dockerfile and 'os.environ["VARIANT"]' in dockerfile


# --- what the image keeps: dependencies, user, app dir, what KubeRay runs ---------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_image_installs_exactly_pyprojects_dependencies_under_constraints(
    dockerfile: str, variant: str, tmp_path: Path
) -> None:
    calls = pip_calls(dockerfile, variant, tmp_path)
    assert calls and all(c[0] == "install" and c[c.index("-c") + 1] == "constraints.txt" for c in calls if "-c" in c)
    assert all("-c" in c for c in calls)
    assert all("--user" not in c and "--target" not in c for c in calls)  # into /usr/local: `ray` on PATH
    (reqs,) = {c[c.index("-r") + 1] for c in calls if "-r" in c}
    named = {a for c in calls if "-r" not in c for a in c[1:] if not a.startswith(("-", "http")) and "." not in a}
    assert named <= {"torch"}, f"installed outside pyproject.toml: {named}"
    # The RUN that writes the requirements file, run here on pyproject.toml.
    ((target, code),) = re.findall(r"^RUN python - <<'PY' > (\S+)\n(.*?)\nPY$", dockerfile, re.M | re.S)
    assert target == reqs
    (tmp_path / "pyproject.toml").write_bytes((REPO_ROOT / "pyproject.toml").read_bytes())
    printed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    want = project["dependencies"] + project["optional-dependencies"]["train"]
    assert printed.stdout.splitlines() == want and any(r.startswith("torch==") for r in want)


def test_dependencies_are_a_layer_before_the_code(dockerfile: str) -> None:
    steps = re.findall(r"^(COPY|RUN) (.*)$", dockerfile, re.M)
    first_code = next(i for i, (kind, rest) in enumerate(steps) if kind == "COPY" and "dogbooth" in rest)
    assert all("pip install" not in rest for _, rest in steps[first_code:])
    assert [rest for kind, rest in steps[:first_code] if kind == "COPY"] == [
        "--chown=1000:100 pyproject.toml constraints.txt ./"
    ]
    check = 'RUN python -c "import services.app, dogbooth.platforms.reload, training.recipe"'
    assert dockerfile.index(check) > dockerfile.index("COPY --chown=1000:100 training ./training")


def test_the_image_has_the_user_and_app_dir_the_chart_and_tilt_expect(dockerfile: str) -> None:
    security = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["podSecurity"]
    uid, gid = security["runAsUser"], security["runAsGroup"]
    assert re.search(rf"useradd --uid {uid} --gid {gid} .*--home-dir /home/ray", dockerfile), (
        "the base has no such user"
    )
    assert re.findall(r"^USER (\S+)$", dockerfile, re.M)[-1] == f"{uid}:{gid}"
    assert re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1] == APP_DIR
    assert re.search(rf"chown {uid}:{gid} {APP_DIR} /home/ray/cache", dockerfile)
    assert all(f"--chown={uid}:{gid}" in line for line in re.findall(r"^COPY .*$", dockerfile, re.M))


def test_the_image_has_what_kuberays_commands_and_probes_run(dockerfile: str) -> None:
    base = base_image(dockerfile, {"VARIANT": "cpu"})
    apt = [words for run in run_lines(dockerfile) for words in re.findall(r"apt-get install([^&]*)", run)]
    installed = {word for words in apt for word in words.split() if not word.startswith("-")}
    assert not KUBERAY_TOOLS - BASE_TOOLS[base.split(":")[0]] - installed
    # KubeRay's `ray start` writes its session under /tmp/ray: the image keeps /tmp as the base has it.
    assert not re.search(r"chmod .*/tmp|VOLUME", dockerfile)
    assert "for tool in bash wget grep ray" in dockerfile  # and the build checks, as the pods' user
