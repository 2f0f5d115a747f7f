"""Hot reload on the running stack, Ray untouched: an edit to handler code is taken in-process (the model
stays loaded), an edit to the model's code restarts the replicas, and a broken edit leaves the old code
serving. How long a reload takes is a figure for `nox -s bench` (dogbooth/commands/benchloop.py), not a test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Stack

from dogbooth.bootstrap import TIMES_ENV, nox_phases, process_started_at
from dogbooth.commands import benchloop
from dogbooth.platforms import devloop, local
from services import hotswap
from services.revision import code_revision


def _ready(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{stack.base_url}/readyz", timeout=10).json()
    return body


@pytest.fixture
def state(stack: Stack) -> local.LocalState:
    found = local.LocalState.read(stack.profile.name)
    assert found is not None
    return found


def test_edited_handler_answers_in_process_with_no_failed_request(stack: Stack, state: local.LocalState) -> None:
    before = _ready(stack)
    app_py = stack.source_root / "services" / "app.py"
    original = app_py.read_text()
    try:
        # The dev loop's watcher, requests throughout, /healthz edited: what `nox -s bench` measures.
        figures = benchloop.measure_reload(stack.profile, stack.source_root, stack.base_url)
        after = _ready(stack)
        assert after["revision"] == code_revision(stack.source_root / "services") != before["revision"]
        assert figures["reload_requests"] > 0 and figures["reload_failed_requests"] == 0, figures
        # The same replica process took it: its model was loaded once, and a constructor ran again.
        assert after["startup"]["load_s"] == before["startup"]["load_s"]
        assert after["startup"]["init_started_at"] > before["startup"]["init_started_at"]
        assert after["reload"]["error"] is None and after["reload"]["wanted"] == after["revision"]
        assert local.LocalState.read(stack.profile.name).pid == state.pid, "Ray must not restart"  # type: ignore[union-attr]
        assert requests.get(stack.endpoint, params={"prompt": "after reload", "steps": 2}, timeout=60).ok
    finally:
        app_py.write_text(original)
        devloop.reload_once(stack.profile, state, ["app.py"], time.time())


def test_broken_edit_keeps_the_previous_code_serving(stack: Stack, state: local.LocalState) -> None:
    before = _ready(stack)
    batcher = stack.source_root / "services" / "batcher.py"
    original = batcher.read_text()
    batcher.write_text(original + "\nraise RuntimeError('a broken edit')\n")
    try:
        assert devloop.reload_once(stack.profile, state, ["batcher.py"], time.time()) is None
        after = _ready(stack)
        assert after["revision"] == before["revision"]
        assert "a broken edit" in after["reload"]["error"]
        assert requests.get(stack.endpoint, params={"prompt": "still serving", "steps": 2}, timeout=60).ok
    finally:
        batcher.write_text(original)
    assert devloop.reload_once(stack.profile, state, ["batcher.py"], time.time()) is not None
    assert _ready(stack)["revision"] == before["revision"]


def test_an_edit_to_the_model_code_restarts_the_replicas(stack: Stack, state: local.LocalState) -> None:
    before = _ready(stack)
    pipeline_py = stack.source_root / "services" / "pipeline.py"
    original = pipeline_py.read_text()
    pipeline_py.write_text(original + "\n# edited by test_hotreload\n")
    try:
        # Asked for an in-process reload all the same, the replica refuses (its kept model code changed
        # on disk), and the deploy falls back to a restart. The dev loop itself would restart at once.
        assert local.deploy(state, stack.profile, timeout_s=120, hot=True) == code_revision(pipeline_py.parent)
        after = _ready(stack)
        assert after["revision"] == code_revision(stack.source_root / "services") != before["revision"]
        assert after["load_seconds"] != before["load_seconds"], "a fresh replica loads the model again"
    finally:
        pipeline_py.write_text(original)
        devloop.reload_once(stack.profile, state, ["pipeline.py"], time.time())  # the stack serves its files again


def test_which_edits_need_a_fresh_replica() -> None:
    assert not hotswap.needs_restart(["app.py", "batcher.py", "adapters.py", "metrics.py", "new_module.py"])
    for kept in ("pipeline.py", "models.py", "schemas.py", "admission.py", "hotswap.py", "entry.py"):
        assert hotswap.needs_restart(["app.py", kept]), kept
    # Every module the pipeline imports is kept, so a kept Generator never meets a newer schema or model type.
    pipeline_imports = {
        line.split()[1].removeprefix("services.")
        for line in (Path(hotswap.__file__).parent / "pipeline.py").read_text().splitlines()
        if line.startswith("from services.")
    }
    assert pipeline_imports <= hotswap.KEPT


def test_timings_table_sums_the_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMES_ENV, "100.0,100.5,101.0")
    phases = nox_phases(103.0)
    assert phases == {"nox start": 0.5, "environment check (bootstrap)": 0.5,
                      "dogbooth start (python, imports, profile)": 2.0}  # fmt: skip
    table = benchloop.timings_table({**phases, "ray start": 4.0}).splitlines()
    assert 0 <= time.time() - (process_started_at() or -1) < 24 * 3600  # this process's start, from /proc
    assert table[0].split()[-2:] == ["0.50", "s"] and table[-1].split() == ["total", "7.00", "s"]
