"""Where things are on disk: the repository, and dogbooth's per-user state (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR_ENV = "DOGBOOTH_STATE_DIR"


def state_dir() -> Path:
    """Per-user state of running stacks (pids, ports, logs, private kubeconfigs)."""
    return Path(os.environ.get(STATE_DIR_ENV, Path.home() / ".cache" / "dogbooth" / "state"))
