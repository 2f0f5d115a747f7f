"""Stand-ins for the external tools (docker, kind, helm, ...) that tests put on PATH.

NEW_ENOUGH is one version line per tool that passes dogbooth/core/tools.py's minimums: when a
minimum moves, this is the one table to update.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NEW_ENOUGH = {
    "docker": "Docker version 27.3.1, build x",
    "kind": "kind version 0.31.0",
    "ctlptl": "v0.8.44, built 2025-12-01",
    "kubectl": "Client Version: v1.34.7",
    "helm": "v3.20.2+g1f8d8d4",
    "tilt": "v0.35.0, built 2025-05-01",
    "eksctl": "0.230.0",
    "aws": "aws-cli/2.27.0 Python/3.13",
}


def write_tool(bin_dir: Path, name: str, body: str) -> Path:
    """An executable shell script `bin_dir/name` running `body`."""
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def only_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str) -> Path:
    """`script` (a whole file, shebang included) as the tool `name`, first on a PATH of /usr/bin:/bin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(script)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return tool
