"""The one shared virtualenv that every nox session runs in (standard library only).

nox gives each session its own venv; `up`, `down`, `dev` and `tests` would then install torch
and Ray four times. Instead they share `.nox/dogbooth`, rebuilt only when the pins change.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = REPO_ROOT / ".nox" / "dogbooth"
PIN_FILES = ("pyproject.toml", "constraints.txt")
EXTRAS = "test,lint,train,loadtest,cluster"


def _fingerprint() -> str:
    digest = hashlib.sha256(EXTRAS.encode())
    for name in PIN_FILES:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()


def env_python(run: Callable[..., object] | None = None) -> str:
    """Path of the shared env's python, creating or refreshing the env when the pins changed.

    `run` is how commands are executed (nox's `session.run`, so they are logged); plain
    subprocess when None. pip, not uv: pip finds the local CPU build of torch, uv downloads CUDA.
    """
    runner = run or (lambda *argv, **_: subprocess.run(argv, check=True))
    python = ENV_DIR / "bin" / "python"
    stamp = ENV_DIR / ".dogbooth-pins"
    wanted = _fingerprint()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    if not python.exists():
        runner(sys.executable, "-m", "venv", str(ENV_DIR), external=True)
    runner(str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip", external=True)
    runner(
        str(python), "-m", "pip", "install", "--quiet",
        "-c", str(REPO_ROOT / "constraints.txt"), "-e", f"{REPO_ROOT}[{EXTRAS}]",
        # compat mode puts the repo on sys.path via a .pth file; the default import hook would
        # shadow PYTHONPATH, and Ray workers must import services/ from the source root they are given.
        "--config-settings", "editable_mode=compat",
        external=True,
    )  # fmt: skip
    stamp.write_text(wanted)
    return str(python)
