"""The serve image's build inputs: what services/Dockerfile copies, in one list, and what it is built on.

The image tag hashes these (dogbooth.platforms.kubesteps.source_hash), Tilt's docker_build gets
them as its context filter (dogbooth.render.tilt), and services/Dockerfile.dockerignore lets in
the same paths. A change to any of them is a new image; a change elsewhere is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dogbooth.core.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"
# Paths relative to the repository root; directories count with every file below them.
IMAGE_CONTEXT = (
    "pyproject.toml",
    "constraints.txt",
    "services/Dockerfile",
    "services/Dockerfile.dockerignore",
    "dogbooth",
    "services",
    "training",
)
# What Tilt's live_update syncs into running containers instead of rebuilding; the rest of
# IMAGE_CONTEXT falls back to a full build.
LIVE_SYNC = "services"
APP_DIR = "/home/ray/app"  # WORKDIR of services/Dockerfile

# services/Dockerfile's FROM. A multi-arch image (docker-library/official-images library/python:
# amd64, arm64v8, ...), so a plain `docker build` takes the Docker server's own architecture, the
# one the kind nodes on that server run: nothing picks a platform for kind or Tilt. Ray's own
# images would not do: rayproject/ray tags are x86_64 unless they carry `-aarch64`
# (ray-project/ray docker/base-deps/README.md).
BASE_IMAGE = "python:3.11-slim-bookworm"
# What `docker info` reports as Architecture for the platforms the image is built for: the base,
# and the ray and torch wheels services/Dockerfile installs, are published for both.
IMAGE_ARCHITECTURES = ("x86_64", "aarch64")
# EKS's GPU nodes (g5, g6) are x86_64: the ECR build names the platform, emulated on an arm64 host.
EKS_PLATFORM = "linux/amd64"
# PyTorch's wheel index per variant; services/Dockerfile takes torch, and only torch, from here.
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"


@dataclass(frozen=True)
class Variant:
    """One services/Dockerfile VARIANT (chart.image.variant): what it needs of the machine that builds and runs it.

    The name is the PyTorch wheel index the image's torch comes from (`cpu`, `cuXYZ`), so the
    name says what the image holds; the Dockerfile fails the build when torch's CUDA differs.
    """

    name: str
    cuda: str | None  # the CUDA version torch is built for; None: CPU only
    min_driver: tuple[int, ...] | None  # oldest NVIDIA Linux driver for that CUDA version
    disk_gib: int  # free space Docker's root dir needs for a build (our estimate, see below)

    @property
    def torch_index(self) -> str:
        return TORCH_INDEX.format(variant=self.name)


def driver_text(version: tuple[int, ...]) -> str:
    """A driver version as NVIDIA writes it: 560.35.05, the third part two digits wide."""
    return ".".join(f"{n:02d}" if i > 1 else str(n) for i, n in enumerate(version))


# The one table of per-variant facts; `nox -s doctor` checks a machine against it.
# cu126: PyTorch publishes torch 2.13.0 for CUDA 12.6, 13.0 and 13.2 (x86_64 and aarch64; pytorch
# RELEASE.md, "CUDA Support Matrix" for 2.12 to 2.14; 12.8 left the matrix with 2.12), and PyPI's
# torch 2.13.0 is the CUDA 13.0 build (pytorch/pytorch#177975), which would need driver >= 580.
# 12.6 is the one CUDA 12 build: it runs on the 570 drivers kind-gpu hosts often have, and its
# libraries come in torch's nvidia-*-cu12 wheels, so the base image carries no CUDA toolkit.
# min_driver: NVIDIA's CUDA Toolkit release notes, Table 3 "CUDA Toolkit and Corresponding Driver
# Versions": CUDA 12.6 Update 3 (the 12.6.3 PyTorch builds with) needs >= 560.35.05 on Linux
# (minor-version compatibility would accept any 12.x driver >= 525, with features missing; we ask
# for the toolkit's own driver).
# disk_gib: the image is ~3 GB (cpu) / ~8 GB (cu126: torch and its CUDA 12.6 wheels, no toolkit in
# the base); on kind it is held up to three times (the build, the local registry, the node's
# containerd), next to the kindest/node image and build cache. Estimates, not measurements.
VARIANTS: dict[str, Variant] = {
    "cpu": Variant("cpu", cuda=None, min_driver=None, disk_gib=15),
    "cu126": Variant("cu126", cuda="12.6", min_driver=(560, 35, 5), disk_gib=30),
}


def image_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every file the image build copies, sorted; caches (__pycache__, .pyc) left out."""
    files: set[Path] = set()
    for entry in IMAGE_CONTEXT:
        path = root / entry
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files.update(p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc")
    return sorted(files)
