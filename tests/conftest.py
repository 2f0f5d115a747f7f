"""Shared fixtures: a real local stack (Ray head + Serve app on the tiny model) on free ports.

Tests never touch a stack a developer is running: every stack here gets its own ports, its own
state directory and a copy of `services/` (so a test may edit serve code without touching the tree).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import local
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_test_profile(directory: Path, name: str, **serve_app: Any) -> Path:
    """A copy of profiles/local.yaml on free ports; `serve_app` overrides keys of serve.app."""
    data = yaml.safe_load((profiles.PROFILES_DIR / "local.yaml").read_text())
    data["name"] = name
    data["ray"].update(gcs_port=free_port(), dashboard_port=free_port(), metrics_port=free_port())
    data["serve"]["http_port"] = free_port()
    data["serve"]["app"].update(serve_app)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Stack:
    profile: Profile
    profile_path: Path
    source_root: Path
    base_url: str

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/imagine"


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DOGBOOTH_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))


def start_stack(directory: Path, name: str, **serve_app: Any) -> Stack:
    """Bring up a private stack serving a copy of services/ from `directory`."""
    source = directory / "src"
    shutil.copytree(REPO_ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__"))
    path = make_test_profile(directory, name, **serve_app)
    profile = profiles.load_file(path)
    endpoint = local.up(profile, source_root=source)
    return Stack(profile, path, source, endpoint.removesuffix("/imagine"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One served tiny model for the whole session; tests must leave it serving."""
    s = start_stack(tmp_path_factory.mktemp("stack"), "pytest-stack")
    try:
        yield s
    finally:
        local.down(s.profile.name)
