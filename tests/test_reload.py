"""dogbooth.platforms.reload (Tilt's live_update step) against a real Ray Serve: the same mechanism as the local
hot reload, driven only through the Serve REST API, with nothing but the revision changed.

tests/test_reload_order.py runs the step in every container, in each order Tilt may pick."""

from __future__ import annotations

import time

import pytest
import requests
from conftest import Stack

from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import local, reload
from services.revision import code_revision


def test_token_is_found_the_way_ray_finds_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    (tmp_path / "t").write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert reload.ray_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert reload.ray_token() == "from-env"


def _ready(stack: Stack) -> dict[str, object]:
    body: dict[str, object] = requests.get(f"{stack.base_url}/readyz", timeout=10).json()
    return body


def test_reload_redeploys_only_the_revision(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    state = local.LocalState.read(stack.profile.name)
    assert state is not None
    monkeypatch.setenv("RAY_AUTH_TOKEN", state.token)
    client = state.client()
    before = reload.running_config(state.dashboard_url, state.token)
    served = _ready(stack)
    # The directory the replicas import from (the stack's copy, or the checkout Ray's workers see).
    (source,) = [
        d for d in (stack.source_root / "services", REPO_ROOT / "services") if code_revision(d) == served["revision"]
    ][:1]

    # A new revision in the runtime_env alone restarts the replicas, on the same running Ray.
    client.deploy(reload.with_revision(before, "reload-probe"))
    client.wait_running(timeout_s=120)
    deadline = time.monotonic() + 120
    while _ready(stack).get("load_seconds") == served["load_seconds"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ready(stack)["load_seconds"] != served["load_seconds"], "replicas did not restart"

    # reload() puts back the config the cluster ran, with a fresh value for the revision of the files
    # on disk, and reports what the restarted replicas serve.
    outcome = reload.reload(state.dashboard_url, token=state.token, services_dir=source, timeout_s=120)
    assert outcome.revision == served["revision"] and outcome.complete, outcome
    assert outcome.deployed.startswith(f"{served['revision']}.")
    assert reload.running_config(state.dashboard_url, state.token) == reload.with_revision(before, outcome.deployed)
    assert _ready(stack)["revision"] == served["revision"]
    assert local.is_alive(state)

    # The same files again: another value, so Serve restarts the replicas (a step in a second
    # container must restart them even when the first one deployed the same revision).
    again = reload.reload(state.dashboard_url, token=state.token, services_dir=source, timeout_s=120)
    assert again.deployed != outcome.deployed and again.complete
