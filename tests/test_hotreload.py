"""Hot reload: an edited serve file answers from the running stack within a bound, Ray untouched."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from conftest import Stack

from dogbooth.core.polling import poll
from dogbooth.platforms import devloop, local
from services.revision import code_revision

RELOAD_BOUND_S = 120  # generous: fresh workers import torch on a loaded 2-core CI machine


def test_edited_serve_code_answers_without_restarting_ray(stack: Stack) -> None:
    state = local.LocalState.read(stack.profile.name)
    assert state is not None
    before = requests.get(f"{stack.base_url}/readyz", timeout=10).json()["revision"]
    stop, watching = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=devloop.watch, args=(stack.profile, stack.source_root),
        kwargs={"poll_s": 0.2, "stop": stop.is_set, "watching": watching.set}, daemon=True,
    )  # fmt: skip
    watcher.start()
    assert watching.wait(30), "the watcher never took its first snapshot"  # the edit must come after it

    def edited() -> dict[str, Any] | None:
        try:
            health: dict[str, Any] = requests.get(f"{stack.base_url}/healthz", timeout=10).json()
        except requests.RequestException:  # replicas are being replaced; not yet
            return None
        return health if health.get("edited") == "yes" else None

    app_py = stack.source_root / "services" / "app.py"
    app_py.write_text(app_py.read_text().replace('return {"status": "ok"}', 'return {"status": "ok", "edited": "yes"}'))
    expected = code_revision(stack.source_root / "services")
    started = time.monotonic()
    try:
        poll("the edited /healthz", edited, timeout_s=RELOAD_BOUND_S, interval_s=0.2)
    finally:
        stop.set()
        watcher.join(timeout=30)
    print(f"hot reload: new code answered after {time.monotonic() - started:.1f}s")
    assert requests.get(f"{stack.base_url}/readyz", timeout=10).json()["revision"] == expected != before
    assert local.LocalState.read(stack.profile.name).pid == state.pid, "Ray must not restart"  # type: ignore[union-attr]
    assert requests.get(stack.endpoint, params={"prompt": "after reload", "steps": 2}, timeout=60).ok
