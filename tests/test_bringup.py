"""`up`/`down` through the real CLI: readiness, the endpoint line, idempotence, no stray process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import make_test_profile
from faketools import NEW_ENOUGH

from dogbooth.core.errors import BringUpError
from dogbooth.platforms import devloop, local
from dogbooth.settings import profiles


def dogbooth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dogbooth", *args], capture_output=True, text=True, timeout=400, check=False
    )


def test_up_down_leaves_no_process_and_both_are_idempotent(tmp_path: Path) -> None:
    path = make_test_profile(tmp_path, "cli-updown")
    port = profiles.load_file(path).serve.http_port
    up = dogbooth("up", "--profile", str(path), "--timings")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip().splitlines()[-1] == f"endpoint: http://127.0.0.1:{port}/imagine"
    # --timings: where the seconds went, phase by phase, before the endpoint line.
    phases = [line.rsplit(None, 2)[0] for line in up.stdout.strip().splitlines()[:-1] if line.endswith(" s")]
    for phase in ("ray start", "replica import (torch, diffusers)", "model load", "warm-up", "total"):
        assert phase in phases, up.stdout
    assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    state = local.LocalState.read("cli-updown")
    assert state is not None and local.is_alive(state)

    again = dogbooth("up", "--profile", str(path))
    assert again.returncode == 0, again.stderr
    assert local.LocalState.read("cli-updown").pid == state.pid, "a second up must not restart Ray"  # type: ignore[union-attr]

    down = dogbooth("down", "--profile", str(path))
    assert down.returncode == 0, down.stderr
    assert local._session_processes(state.sid, state.temp_dir) == []
    assert not Path(state.temp_dir).exists()
    assert local.LocalState.read("cli-updown") is None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)

    twice = dogbooth("down", "--profile", str(path))
    assert twice.returncode == 0
    assert "nothing of ours is running" in twice.stderr


def test_busy_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    path = make_test_profile(tmp_path, "busy")
    port = profiles.load_file(path).serve.http_port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(BringUpError, match=f"serve.http_port {port} is in use"):
            local.up(profiles.load_file(path))
    assert local.LocalState.read("busy") is None


def test_cli_reports_profile_errors_without_a_traceback(tmp_path: Path) -> None:
    result = dogbooth("up", "--profile", "no-such-profile")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no profile 'no-such-profile'")
    assert "Traceback" not in result.stderr


KIND_CPU_TOOLS = {name: NEW_ENOUGH[name] for name in ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt")}


def test_dev_falls_back_to_local_and_says_why(tmp_path: Path) -> None:
    """Real executables that print their version, found through `which`; two of them then go missing."""
    paths = {}
    for tool, version in KIND_CPU_TOOLS.items():
        paths[tool] = tmp_path / tool
        paths[tool].write_text(f'#!/bin/sh\necho "{version}"\n')
        paths[tool].chmod(0o755)
    assert devloop.choose_profile(which=lambda tool: str(paths[tool])) == (
        "kind-cpu",
        "docker, kind, ctlptl, kubectl, helm and tilt are all installed",
    )
    missing = ("kind", "tilt")
    name, reason = devloop.choose_profile(which=lambda tool: None if tool in missing else str(paths[tool]))
    assert name == "local"
    assert reason.startswith("kind, tilt missing or too old, so Ray runs on this host")
