"""The serve image's build inputs: what services/Dockerfile copies, in one list.

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


@dataclass(frozen=True)
class Variant:
    """One services/Dockerfile VARIANT (chart.image.variant): what it needs of the machine that builds and runs it."""

    name: str
    cuda: str | None  # the CUDA version the image is built for; None: CPU only
    min_driver: tuple[int, ...] | None  # oldest NVIDIA Linux driver for that CUDA version
    disk_gib: int  # free space Docker's root dir needs for a build (our estimate, see below)


# The one table of per-variant facts; `nox -s doctor` checks a machine against it.
# min_driver: NVIDIA's CUDA Toolkit release notes, Table 3 "CUDA Toolkit and Corresponding Driver
# Versions": CUDA 12.8 GA needs >= 570.26 on Linux x86_64 (minor-version compatibility would accept
# any 12.x driver >= 525, with features missing; we ask for the toolkit's own driver).
# Known gap, to be changed with the variants: the cu128 build installs torch from PyPI, and PyPI's
# torch 2.13.0 (pyproject.toml) is built for CUDA 13.0 (PyTorch moved PyPI's wheels to 13.0 from
# 2.11, pytorch/pytorch#177975), which needs driver >= 580.65.06 (CUDA 13.0 GA, same table).
# disk_gib: the image is ~4 GB (cpu) / ~10 GB (CUDA); on kind it is held up to three times (the
# build, the local registry, the node's containerd), next to the kindest/node image and build cache.
VARIANTS: dict[str, Variant] = {
    "cpu": Variant("cpu", cuda=None, min_driver=None, disk_gib=15),
    "cu128": Variant("cu128", cuda="12.8", min_driver=(570, 26), disk_gib=40),
}
# services/Dockerfile's base, rayproject/ray:<version>-py311-<variant>, is an x86_64 image: Ray tags
# its arm64 images with an extra `-aarch64` suffix (ray-project/ray docker/base-deps/README.md).
IMAGE_ARCHITECTURE = "x86_64"


def image_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every file the image build copies, sorted; caches (__pycache__, .pyc) left out."""
    files: set[Path] = set()
    for entry in IMAGE_CONTEXT:
        path = root / entry
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files.update(p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc")
    return sorted(files)
