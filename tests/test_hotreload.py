"""Hot reload: an edited serve file answers from the running stack within a bound, Ray untouched."""

from __future__ import annotations

import threading
import time

import requests
from conftest import Stack

from dogbooth.platforms import devloop, local
from services.revision import code_revision

RELOAD_BOUND_S = 120  # generous: fresh workers import torch on a loaded 2-core CI machine


def test_edited_serve_code_answers_without_restarting_ray(stack: Stack) -> None:
    state = local.LocalState.read(stack.profile.name)
    assert state is not None
    health: dict[str, str] = {}
    before = requests.get(f"{stack.base_url}/readyz", timeout=10).json()["revision"]
    stop = threading.Event()
    watcher = threading.Thread(
        target=devloop.watch, args=(stack.profile, stack.source_root),
        kwargs={"poll_s": 0.2, "stop": stop.is_set}, daemon=True,
    )  # fmt: skip
    watcher.start()
    time.sleep(1)  # the watcher's first snapshot must predate the edit

    app_py = stack.source_root / "services" / "app.py"
    app_py.write_text(app_py.read_text().replace('return {"status": "ok"}', 'return {"status": "ok", "edited": "yes"}'))
    expected = code_revision(stack.source_root / "services")
    started = time.monotonic()
    try:
        while time.monotonic() - started < RELOAD_BOUND_S:
            try:
                health = requests.get(f"{stack.base_url}/healthz", timeout=10).json()
            except requests.RequestException:  # replicas are being replaced; not yet
                health = {}
            if health.get("edited") == "yes":
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert health.get("edited") == "yes", f"edit not served after {RELOAD_BOUND_S}s"
    print(f"hot reload: new code answered after {elapsed:.1f}s")
    assert requests.get(f"{stack.base_url}/readyz", timeout=10).json()["revision"] == expected != before
    assert local.LocalState.read(stack.profile.name).pid == state.pid, "Ray must not restart"  # type: ignore[union-attr]
    assert requests.get(stack.endpoint, params={"prompt": "after reload", "steps": 2}, timeout=60).ok
