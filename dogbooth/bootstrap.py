"""The one shared virtualenv that every nox session runs in (standard library only).

nox gives each session its own venv; `up`, `down`, `dev` and `tests` would then install torch
and Ray four times. Instead they share `.nox/dogbooth`, rebuilt only when the pins change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = REPO_ROOT / ".nox" / "dogbooth"
PIN_FILES = ("pyproject.toml", "constraints.txt")
EXTRAS = "test,lint,train,loadtest,cluster"
# What the noxfile tells `python -m dogbooth` for `up --timings`: when nox started, when its check of
# this env began and when it ended (seconds since the epoch, comma-separated).
TIMES_ENV = "DOGBOOTH_NOX_TIMES"


def process_started_at() -> float | None:
    """When this process started (seconds since the epoch), from /proc; None where there is no /proc."""
    try:
        # Field 22 of /proc/self/stat (counted after the command name's closing parenthesis): clock
        # ticks from boot to this process's start. /proc/uptime gives the seconds from boot to now.
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def _fingerprint() -> str:
    digest = hashlib.sha256(EXTRAS.encode())
    for name in PIN_FILES:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()


def nox_phases(entered: float) -> dict[str, float]:
    """`up --timings`'s phases before the command's own work; `entered` is when it began (time.time())."""
    times = os.environ.get(TIMES_ENV)
    if not times:  # run as `python -m dogbooth`, not through nox
        return {"python start, imports": entered - (process_started_at() or entered)}
    nox_started, checking, checked = (float(t) for t in times.split(","))
    return {
        "nox start": checking - nox_started,
        "environment check (bootstrap)": checked - checking,
        "dogbooth start (python, imports, profile)": entered - checked,
    }


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
