"""`nox -s dev` on the local platform: bring the stack up, then redeploy whenever services/ changes.

This is the host's counterpart of Tilt's live_update: the same code-revision redeploy, no restart
of Ray. A broken edit is reported and the loop keeps watching; the last good code keeps serving.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from dogbooth.core.errors import DogboothError
from dogbooth.core.tools import find_problems
from dogbooth.platforms import local
from dogbooth.platforms.kubesteps import required_tools
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.dev")


def choose_profile(which: Callable[[str], str | None] = shutil.which) -> tuple[str, str]:
    """The default dev profile and a one-line reason for it (kind-cpu's tools, checked with versions)."""

    problems = find_problems(required_tools("kind", "dev"), which)
    if not problems:
        return "kind-cpu", "docker, kind, ctlptl, kubectl, helm and tilt are all installed"
    names = ", ".join(problem.split(":")[0].split()[0] for problem in problems)
    return "local", f"{names} missing or too old, so Ray runs on this host (docs/kind.md sets up kind)"


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*.py") if "__pycache__" not in p.parts}


def watch(profile: Profile, source_root: Path, *, poll_s: float = 0.5,
          stop: Callable[[], bool] = lambda: False, watching: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    """Redeploy on every change under `source_root/services` until `stop()` or Ctrl-C.

    `watching()` is called once the baseline is taken: every change from then on is redeployed."""
    services = source_root / "services"
    state = local.LocalState.read(profile.name)
    if state is None:
        raise DogboothError(f"profile {profile.name} is not up")
    seen = _snapshot(services)
    watching()
    while not stop():
        time.sleep(poll_s)
        current = _snapshot(services)
        if current == seen:
            continue
        seen = current
        started = time.monotonic()
        log.info("services/ changed; redeploying")
        try:
            revision = local.deploy(state, profile, timeout_s=120)
        except DogboothError as e:
            log.error("reload failed, the previous code keeps serving:\n%s", e)
            continue
        log.info("revision %s answering after %.1fs", revision, time.monotonic() - started)


def run(profile: Profile, source_root: Path) -> None:
    """Foreground dev loop: up, print the URL, watch; Ctrl-C tears it down."""
    try:
        endpoint = local.up(profile, source_root=source_root)
        print(f"endpoint: {endpoint}", flush=True)
        log.info("watching %s/services for changes (Ctrl-C stops and tears down)", source_root)
        watch(profile, source_root)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        local.down(profile.name)
