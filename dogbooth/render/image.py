"""The serve image's build inputs: what services/Dockerfile copies, in one list.

The image tag hashes these (dogbooth.platforms.kubesteps.source_hash), Tilt's docker_build gets
them as its context filter (dogbooth.render.tilt), and services/Dockerfile.dockerignore lets in
the same paths. A change to any of them is a new image; a change elsewhere is not.
"""

from __future__ import annotations

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


def image_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every file the image build copies, sorted; caches (__pycache__, .pyc) left out."""
    files: set[Path] = set()
    for entry in IMAGE_CONTEXT:
        path = root / entry
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files.update(p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc")
    return sorted(files)
