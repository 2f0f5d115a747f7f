"""dogbooth.platforms.forward (issue 11, defect 8): the port-forward Tilt runs waits for its Service and
starts again when kubectl exits, against a stand-in `kubectl` on PATH that records what it was asked.

Why it must: KubeRay creates `<rayservice>-serve-svc` only once a RayCluster is ready (ray-project/kuberay
v1.7.0, rayservice_controller.go), and Tilt does not restart a serve_cmd that has exited
(tilt-dev/tilt, internal/controllers/core/cmd/controller.go: a Cmd runs again only when its spec
changes or a restart is triggered).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import free_port

from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import forward

# The first `get svc` is NotFound, later ones find it; the first port-forward loses its pod, the
# second listens on the port (as kubectl does) until it is stopped.
FAKE_KUBECTL = r"""#!{python}
import json, os, signal, socket, sys
args = sys.argv[1:]
state = {state!r}
def record(entry):
    with open(os.path.join(state, "calls.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\n")
def count(kind):
    path = os.path.join(state, kind)
    n = int(open(path).read()) + 1 if os.path.exists(path) else 1
    open(path, "w").write(str(n))
    return n
record(args)
if "get" in args:
    if count("get") == 1:
        print('Error from server (NotFound): services "dogbooth-serve-svc" not found', file=sys.stderr)
        sys.exit(1)
    print("service/dogbooth-serve-svc")
    sys.exit(0)
if "port-forward" in args:
    if count("port-forward") == 1:
        print("error: lost connection to pod", file=sys.stderr)
        sys.exit(1)
    port = int(args[-1].split(":")[0])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args[args.index("--address") + 1], port))
    server.listen()
    def stop(signum, frame):
        record(["stopped", signal.Signals(signum).name])
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print(f"Forwarding from 127.0.0.1:{{port}} -> {{port}}", flush=True)
    while True:
        server.accept()[0].close()
sys.exit(2)
"""


def _until(what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, state=str(state)))
    kubectl.chmod(0o755)
    return state


@pytest.fixture
def started(fake_kubectl: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port = free_port()
    argv = [sys.executable, "-m", "dogbooth.platforms.forward", "--context", "kind-dogbooth"]
    argv += ["--namespace", "dogbooth", "--service", "dogbooth-serve-svc", "--port", str(port)]
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    log = (tmp_path / "forward.log").open("w")
    # Its own session, as Tilt starts a serve_cmd: whatever is left of it can be ended as one group.
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        yield proc, port, tmp_path / "forward.log"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def _calls(state: Path) -> list[list[str]]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_forward_waits_for_the_service_restarts_and_stops_cleanly(
    started: tuple[subprocess.Popen[str], int, Path], fake_kubectl: Path
) -> None:
    proc, port, log = started
    _until(f"127.0.0.1:{port} to accept connections (Tilt's readiness probe)", lambda: _listening(port))

    kubectl = ["kubectl", "--context", "kind-dogbooth", "-n", "dogbooth"]
    get = [*kubectl, "get", "svc", "dogbooth-serve-svc", "-o", "name"]
    pf = [*kubectl, "port-forward", "--address", "127.0.0.1", "svc/dogbooth-serve-svc", f"{port}:{port}"]
    # The stand-in records its arguments: NotFound, found, lost pod, found, forwarding.
    assert _calls(fake_kubectl) == [get[1:], get[1:], pf[1:], get[1:], pf[1:]]

    output = log.read_text()
    assert "svc/dogbooth-serve-svc is not there yet" in output and "(NotFound)" in output
    assert "port-forward to svc/dogbooth-serve-svc exited 1: error: lost connection to pod" in output
    assert f"$ {' '.join(pf)}" in output  # every kubectl call is logged

    proc.send_signal(signal.SIGTERM)  # how Tilt stops a serve_cmd
    assert proc.wait(timeout=20) == 0
    assert _calls(fake_kubectl)[-1] == ["stopped", "SIGTERM"], "kubectl was left running"
    assert not _listening(port)
    assert "stopped by SIGTERM" in log.read_text()


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = forward.Backoff(first=0.5, cap=3)
    assert [backoff.next() for _ in range(5)] == [0.5, 1, 2, 3, 3]
    backoff.reset()
    assert backoff.next() == 0.5


def test_the_forward_binds_loopback_only_and_pins_the_context() -> None:
    fwd = forward.parse_args(["--context", "kind-x", "--namespace", "ns", "--service", "s", "--port", "1234"])
    assert fwd.forward_argv() == [
        "kubectl", "--context", "kind-x", "-n", "ns", "port-forward", "--address", "127.0.0.1", "svc/s", "1234:1234"
    ]  # fmt: skip


def test_without_kubectl_it_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["--namespace", "ns", "--service", "s", "--port", "1"]
    try:
        assert forward.main(argv) == 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert "kubectl: not found on PATH" in capsys.readouterr().err
