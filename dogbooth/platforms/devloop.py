"""`nox -s dev` on the local platform: bring the stack up, then redeploy whenever services/ changes.

This is the host's counterpart of Tilt's live_update, without a restart of Ray. An edit that leaves
the model's code alone (services/hotswap.py) reloads in the running replicas, which keep the loaded
model; any other edit restarts the replicas with the new code-revision, as Tilt does. A broken edit
is reported and the loop keeps watching; the last good code keeps serving. Every reload prints how
long it took from the file's save to the new code answering.
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
from services import hotswap

log = logging.getLogger("dogbooth.dev")


def choose_profile(which: Callable[[str], str | None] = shutil.which) -> tuple[str, str]:
    """The default dev profile and a one-line reason for it (kind-cpu's tools, checked with versions)."""

    problems = find_problems(required_tools("kind", "dev"), which)
    if not problems:
        return "kind-cpu", "docker, kind, ctlptl, kubectl, helm and tilt are all installed"
    names = ", ".join(problem.split(":")[0].split()[0] for problem in problems)
    return "local", f"{names} missing or too old, so Ray runs on this host (docs/kind.md sets up kind)"


def _snapshot(directory: Path) -> dict[str, float]:
    return {p.relative_to(directory).as_posix(): p.stat().st_mtime
            for p in directory.rglob("*.py") if "__pycache__" not in p.parts}  # fmt: skip


def _changed(before: dict[str, float], after: dict[str, float]) -> tuple[list[str], float]:
    """The files added, removed or saved between two snapshots, and when the last save happened."""
    names = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    return names, max([after[n] for n in names if n in after], default=time.time())


def reload_once(profile: Profile, state: local.LocalState, changed: list[str], saved_at: float) -> float | None:
    """Redeploy for these changed files; print and return seconds from the save to the new code
    answering, or None when the edit did not load (the previous code keeps serving)."""
    hot = not hotswap.needs_restart(changed)
    how = "in-process, model kept" if hot else "replicas restarted"
    log.info("services/ changed (%s); reloading %s", ", ".join(changed), how)
    try:
        revision = local.deploy(state, profile, timeout_s=120, hot=hot)
    except DogboothError as e:
        print(f"reload failed, the previous code keeps serving: {e}", flush=True)
        return None
    seconds = time.time() - saved_at
    print(f"reloaded: revision {revision} answering {seconds:.1f} s after the save ({how})", flush=True)
    return seconds


def watch(profile: Profile, source_root: Path, *, poll_s: float = 0.1,
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
        changed, saved_at = _changed(seen, current)
        seen = current
        reload_once(profile, state, changed, saved_at)


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
