"""The edit loop's two figures (issue 15), measured as a user meets them, on a private stack:

    up_warm_s  `nox -s up` with the env built and the model cached, from the command to the first 200
    reload_s   `nox -s dev`'s reload: a serve file saved, to the new code answering

`measure()` gives both, plus the requests that failed during the reload (the goal is none); `nox -s
bench` records them. `up --timings` prints where the bring-up's seconds go (`timings_table`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

from dogbooth.core.errors import DogboothError
from dogbooth.core.paths import REPO_ROOT, STATE_DIR_ENV
from dogbooth.core.polling import poll
from dogbooth.platforms import devloop, local
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile

EDIT_MARK = "benchloop-edit"  # what the edited /healthz returns, so the new code is seen answering


def timings_table(phases: dict[str, float]) -> str:
    """One line per phase and a total from the first phase's start to now."""
    width = max(map(len, phases), default=0)
    lines = [f"{name:<{width}}  {seconds:6.2f} s" for name, seconds in phases.items()]
    return "\n".join([*lines, f"{'total':<{width}}  {sum(phases.values()):6.2f} s"])


def private_profile(profile: Profile, directory: Path, name: str) -> Path:
    """`profile` as a file on free ports, named `name`, for a stack that collides with nothing."""
    data = local.on_free_ports(profile, name).model_dump(mode="json")
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _up_command(profile_path: Path, source_root: Path) -> list[str]:
    args = ["--profile", str(profile_path), "--source-root", str(source_root)]
    nox = REPO_ROOT / ".venv" / "bin" / "nox"
    found = str(nox) if nox.exists() else shutil.which("nox")
    if found:
        return [found, "-f", str(REPO_ROOT / "noxfile.py"), "-s", "up", "--", *args]
    return [sys.executable, "-m", "dogbooth", "up", *args]  # no nox here: the figure lacks nox's start


def _edit(app_py: Path) -> None:
    text = app_py.read_text()
    old = 'return {"status": "ok"}'
    if old not in text:
        raise DogboothError(f"{app_py}: no `{old}` in /healthz to edit")
    app_py.write_text(text.replace(old, f'return {{"status": "ok", "edited": "{EDIT_MARK}"}}', 1))


def measure_reload(profile: Profile, source_root: Path, base_url: str, *, timeout_s: float = 120) -> dict[str, float]:
    """Edit /healthz in `source_root`'s services/app.py under `nox -s dev`'s watcher, with requests
    running throughout: seconds from the save to the edit answering, and the requests that failed."""
    stop, watching = threading.Event(), threading.Event()
    failed, sent = [0], [0]

    def traffic() -> None:
        while not stop.is_set():
            try:
                ok = requests.get(f"{base_url}/imagine?prompt=reload&steps=2", timeout=60).ok
            except requests.RequestException:
                ok = False
            sent[0], failed[0] = sent[0] + 1, failed[0] + (not ok)

    def edited() -> bool | None:
        with contextlib.suppress(requests.RequestException, ValueError):
            return requests.get(f"{base_url}/healthz", timeout=5).json().get("edited") == EDIT_MARK or None
        return None

    if local.LocalState.read(profile.name) is None:
        raise DogboothError(f"profile {profile.name} is not up")
    watch = functools.partial(devloop.watch, profile, source_root, stop=stop.is_set, watching=watching.set)
    threads = [threading.Thread(target=run, daemon=True) for run in (traffic, watch)]
    for t in threads:
        t.start()
    try:
        if not watching.wait(30):
            raise DogboothError("the dev loop's watcher did not start")
        app_py = source_root / "services" / "app.py"
        _edit(app_py)
        saved = app_py.stat().st_mtime
        poll("the edited /healthz", edited, timeout_s=timeout_s, interval_s=0.05)
        reload_s = time.time() - saved
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)
    return {"reload_s": round(reload_s, 2), "reload_requests": sent[0], "reload_failed_requests": failed[0]}


def measure(profile: Profile | str, *, timeout_s: float = 300) -> dict[str, float]:
    """up_warm_s and reload_s (plus the reload's requests and failures) on a private copy of services/."""
    profile = profiles.load(profile) if isinstance(profile, str) else profile
    with tempfile.TemporaryDirectory(prefix="dogbooth-benchloop-") as tmp:
        directory, name = Path(tmp), f"benchloop-{os.getpid()}"
        source = directory / "src"
        shutil.copytree(REPO_ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__"))
        path = private_profile(profile, directory, name)
        private = profiles.load_file(path)
        previous = os.environ.get(STATE_DIR_ENV)
        os.environ[STATE_DIR_ENV] = str(directory / "state")  # shared by nox's child and this process
        try:
            began = time.time()
            up = subprocess.run(_up_command(path, source), capture_output=True, text=True, timeout=timeout_s)
            up_warm_s = time.time() - began
            if up.returncode != 0:
                raise DogboothError(f"up for the loop bench failed:\n{up.stderr[-2000:]}")
            base_url = f"http://127.0.0.1:{private.serve.http_port}"
            return {"up_warm_s": round(up_warm_s, 2), **measure_reload(private, source, base_url)}
        finally:
            local.down(name)
            if previous is None:
                os.environ.pop(STATE_DIR_ENV, None)
            else:
                os.environ[STATE_DIR_ENV] = previous
