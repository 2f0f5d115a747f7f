"""The bounded waits built on dogbooth.core.polling.poll: each returns once its condition holds, fails
at once on a state that cannot turn good, and otherwise times out with its own error and the last
thing it saw. Fakes only (a scripted HTTP server, a scripted kubectl): a few seconds in all."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dogbooth.commands.pipeline import deploy
from dogbooth.commands.reliability import ReliabilityError, train_interrupt
from dogbooth.core.errors import BringUpError, DogboothError
from dogbooth.core.polling import poll
from dogbooth.platforms import argo
from dogbooth.platforms.serveclient import ServeClient
from dogbooth.render.argo import PipelineError
from dogbooth.render.serveconfig import APP_NAME

Script = dict[tuple[str, str], list[tuple[int, Any]]]


class _Scripted(BaseHTTPRequestHandler):
    """Answers each (method, path) from its script in turn; the last answer repeats."""

    script: Script = {}
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        if self.command == "PUT":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answers = self.script.get((self.command, self.path), [(404, {})])
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script: Script = {}
    _Scripted.script = script
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def test_poll_names_its_error_and_lets_the_check_fail_at_once() -> None:
    class Mine(DogboothError):
        pass

    with pytest.raises(Mine, match=r"timed out after 0s waiting for nothing:\n  - still nothing"):
        poll(
            "nothing", lambda: None, timeout_s=0.1, interval_s=0.02, error=Mine, on_timeout=lambda: "  - still nothing"
        )
    with pytest.raises(BringUpError, match="timed out"):  # the default kind, for the existing callers
        poll("nothing", lambda: None, timeout_s=0.05, interval_s=0.02)
    calls = iter([None, None, "there"])
    assert poll("a value", lambda: next(calls), timeout_s=5, interval_s=0.01) == "there"


def _apps(status: str, message: str = "") -> tuple[int, Any]:
    return 200, {"applications": {APP_NAME: {"status": status, "message": message}}}


def test_serve_deploy_retries_5xx_and_stops_on_a_rejected_config(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    put = ("PUT", "/api/serve/applications/")
    script[put] = [(503, "starting"), (503, "starting"), (200, {})]
    ServeClient(url).deploy({}, retry_s=10)
    script[put] = [(400, "bad config")]
    with pytest.raises(BringUpError, match=r"Serve rejected the config \(400\)"):
        ServeClient(url).deploy({}, retry_s=10)
    script[put] = [(503, "still starting")]
    with pytest.raises(BringUpError, match=r"(?s)timed out.*last: Serve answered 503"):
        ServeClient(url).deploy({}, retry_s=0.5)


def test_serve_wait_running_fails_fast_on_deploy_failed(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    get = ("GET", "/api/serve/applications/")
    script[get] = [_apps("DEPLOYING"), _apps("RUNNING")]
    ServeClient(url).wait_running(timeout_s=10)
    script[get] = [_apps("DEPLOYING"), _apps("DEPLOY_FAILED", "ImportError: no module x")]
    with pytest.raises(BringUpError, match="(?s)is DEPLOY_FAILED:\nImportError: no module x"):
        ServeClient(url).wait_running(timeout_s=60)
    script[get] = [(200, {"applications": {"baseline": {"status": "RUNNING"}}})]
    ServeClient(url).wait_running(timeout_s=10, app_name="baseline")
    script[get] = [_apps("DEPLOYING", "waiting for replicas")]
    with pytest.raises(BringUpError, match="(?s)timed out.*is DEPLOYING:\nwaiting for replicas"):
        ServeClient(url).wait_running(timeout_s=0.5, log_hint="/tmp/ray-x")


def test_readyz_waits_for_the_revision_or_model(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script[("GET", "/readyz")] = [(503, {}), (200, {"revision": "old"}), (200, {"revision": "new", "model": "m"})]
    ServeClient(url).wait_ready(url, "new", timeout_s=10)
    assert deploy.wait_ready(f"{url}/readyz", "m", timeout_s=5, interval_s=0.05)["revision"] == "new"
    with pytest.raises(BringUpError, match=r"(?s)timed out.*last: 200"):
        ServeClient(url).wait_ready(url, "newer", timeout_s=0.5)
    with pytest.raises(BringUpError, match=r"(?s)report model other.*last: 200"):
        deploy.wait_ready(f"{url}/readyz", "other", timeout_s=0.3, interval_s=0.05)


class _Kubectl:
    """`kubectl get workflow -o json`, one scripted status per call (the last repeats)."""

    def __init__(self, *statuses: dict[str, Any]) -> None:
        self.statuses = list(statuses)

    def run(self, argv: list[str], **_: Any) -> str:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return json.dumps({"status": status})


def _node(name: str, phase: str) -> dict[str, Any]:
    return {"nodes": {name: {"type": "Pod", "displayName": name, "phase": phase, "startedAt": name}}}


def test_workflow_follow_prints_steps_and_fails_as_a_pipeline_error(capsys: pytest.CaptureFixture[str]) -> None:
    runner = _Kubectl(
        {"phase": "Running", **_node("train", "Running")},
        {"phase": "Running", **_node("train", "Running")},
        {"phase": "Succeeded", **_node("train", "Succeeded")},
    )
    argo.follow_workflow(runner, ["kubectl"], "wf", timeout_s=10, poll_s=0.01)
    assert capsys.readouterr().out.splitlines() == ["  train: Running", "  train: Succeeded"]
    with pytest.raises(PipelineError, match="workflow/wf failed: OOMKilled"):
        argo.follow_workflow(_Kubectl({"phase": "Failed", "message": "OOMKilled"}), ["kubectl"], "wf", timeout_s=10)
    with pytest.raises(PipelineError, match="(?s)timed out after 0s waiting for workflow/wf.*keeps running"):
        argo.follow_workflow(_Kubectl({"phase": "Running"}), ["kubectl"], "wf", timeout_s=0.1, poll_s=0.02)


def _sleeper(seconds: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", f"import time; time.sleep({seconds})"]
    return subprocess.Popen(argv, start_new_session=True)


def test_training_kill_waits_for_checkpoints_and_names_why_it_could_not(tmp_path: Path) -> None:
    proc = _sleeper(30)
    try:
        with pytest.raises(ReliabilityError, match="timed out after 0s waiting for training checkpoint #2"):
            train_interrupt._kill_between(proc, tmp_path, after=2, timeout_s=0.3)
    finally:
        proc.kill()
        proc.wait()
    gone = _sleeper(0)
    gone.wait()
    with pytest.raises(ReliabilityError, match=r"training exited \(0\) before its checkpoint #2"):
        train_interrupt._kill_between(gone, tmp_path, after=2, timeout_s=30)
    for step in (6, 12):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / train_interrupt.MARKER).write_text(json.dumps({"step": step}))
    alive = _sleeper(30)
    train_interrupt._kill_between(alive, tmp_path, after=2, timeout_s=10)  # both there: killed at once
    assert alive.returncode is not None
