"""Tilt's live reload leaves every replica on the new code whatever order Tilt updates the pods in
(issue 11, defect 3).

Tilt live-updates a resource's containers one after the other, in the order its pod discovery
lists them (a Go map walk, so it varies), and for each one syncs the files and then runs the `run`
step, waiting for it to end before it touches the next container (tilt-dev/tilt,
internal/controllers/core/liveupdate/reconciler.go, `maybeSync` and `applyInternal`;
internal/containerupdate/exec_updater.go). Here each container is a directory with its own copy of
`services/`, each step is `python -m dogbooth.platforms.reload` run in it as Tilt's exec would, and
Ray is a fake of the Serve REST API that follows Serve's rules for what a deploy restarts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dogbooth.core.errors import BringUpError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import reload
from dogbooth.render import chart
from dogbooth.render.serveconfig import APP_NAME, serve_config
from dogbooth.settings import profiles
from services.revision import code_revision

TOKEN = "test-ray-token"
HEAD = "head"
STEP_LIMIT_S = 30  # a step that waits for containers Tilt has not synced yet would wait forever
# Runs the step as Tilt's exec does (`python -m dogbooth.platforms.reload` in the container's
# working directory), pointed at the fake dashboard's port instead of Ray's.
DRIVER = """
import runpy, sys
from dogbooth.core import names
names.DASHBOARD_PORT = int(sys.argv[1])
runpy.run_module("dogbooth.platforms.reload", run_name="__main__")
"""


@dataclass
class Deploy:
    value: str
    build: str  # the revision of the head's files: Serve's build task imports them there
    replicas: dict[str, str]  # worker container -> the revision its replica imported


@dataclass
class FakeServe:
    """Ray's Serve REST API and proxy, as far as dogbooth.platforms.reload uses them.

    As Serve does (ray/serve/_private/application_state.py, `apply_app_config`): a config whose code
    version (import_path, runtime_env, args) is unchanged restarts nothing; a changed one builds the
    app again on the head and replaces every replica, and each new replica imports the files of the
    container it runs in, as they are at that moment.
    """

    containers: dict[str, Path]
    config: dict[str, Any]
    deploys: list[Deploy] = field(default_factory=list)
    status: str = "RUNNING"
    message: str = ""
    fail_next: str = ""
    port: int = 0
    _turn: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._record(self._app_config()["runtime_env"]["env_vars"]["DOGBOOTH_CODE_REVISION"])

    def _app_config(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        (app,) = [a for a in (config or self.config)["applications"] if a["name"] == APP_NAME]
        return dict(app)

    def _record(self, value: str) -> None:
        workers = {name: code_revision(d) for name, d in self.containers.items() if name != HEAD}
        self.deploys.append(Deploy(value, code_revision(self.containers[HEAD]), workers))

    def put(self, config: dict[str, Any]) -> None:
        with self._lock:
            new, old = self._app_config(config), self._app_config()
            self.config = config
            if [new.get(k) for k in ("import_path", "runtime_env", "args")] == [
                old.get(k) for k in ("import_path", "runtime_env", "args")
            ]:
                return
            self._record(new["runtime_env"]["env_vars"]["DOGBOOTH_CODE_REVISION"])
            self.status, self.message = "DEPLOYING", ""

    def details(self) -> dict[str, Any]:
        with self._lock:
            app = {
                "status": self.status,
                "message": self.message,
                "deployed_app_config": self._app_config(),
                "deployments": {
                    "Imagine": {"status": "HEALTHY", "replicas": [{"node_id": n} for n in self.deploys[-1].replicas]}
                },
            }
            if self.status == "DEPLOYING":  # Serve reports DEPLOYING at least once, then the outcome
                self.status, self.message = ("DEPLOY_FAILED", self.fail_next) if self.fail_next else ("RUNNING", "")
            return {
                "proxy_location": "EveryNode",
                "http_options": {"host": "0.0.0.0", "port": self.port},
                "applications": {APP_NAME: app},
            }

    def readyz(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self.status != "RUNNING":
                return 503, {"status": self.status}
            revisions = list(self.deploys[-1].replicas.values())
            self._turn += 1
            return 200, {"status": "ready", "revision": revisions[self._turn % len(revisions)]}


def _handler(fake: FakeServe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest's output to the assertions
            pass

        def _answer(self, code: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            self._answer(401, {"error": "token required"})
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/readyz":
                self._answer(*fake.readyz())
            elif self.path == "/api/serve/applications/" and self._authorized():
                self._answer(200, fake.details())
            elif self.path != "/api/serve/applications/":
                self._answer(404)

        def do_PUT(self) -> None:  # noqa: N802
            if self.path == "/api/serve/applications/" and self._authorized():
                fake.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self._answer(200)

    return Handler


@dataclass
class Cluster:
    fake: FakeServe
    roots: dict[str, Path]  # container -> its working directory, with services/ in it
    new_files: Path  # the edited services/ on the developer's machine
    old: str
    new: str


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A head and two workers, each with the image's services/, running revision `old` everywhere."""
    roots = {name: tmp_path / name for name in (HEAD, "worker-a", "worker-b")}
    ignore = shutil.ignore_patterns("__pycache__")
    for root in roots.values():
        shutil.copytree(REPO_ROOT / "services", root / "services", ignore=ignore)
    new_files = tmp_path / "edited" / "services"
    shutil.copytree(REPO_ROOT / "services", new_files, ignore=ignore)
    app = new_files / "app.py"
    app.write_text(app.read_text() + "\n# edited: a new revision\n")
    config = serve_config(profiles.load("kind-cpu"))
    fake = FakeServe({name: root / "services" for name, root in roots.items()}, config)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Cluster(fake, roots, new_files, code_revision(roots[HEAD] / "services"), code_revision(new_files))
    finally:
        server.shutdown()
        server.server_close()


def _step(cluster: Cluster, name: str) -> subprocess.CompletedProcess[str]:
    """Tilt's `run` step in container `name`: the pod's environment, its working directory."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": str(cluster.roots[name]),
        reload.NODE_ENV: "head" if name == HEAD else "worker",
        "RAY_AUTH_TOKEN": TOKEN,
        # KubeRay: 127.0.0.1 on the head, the RayCluster's head Service on workers; both lead here.
        "RAY_ADDRESS": "127.0.0.1:6379",
    }
    argv = [sys.executable, "-c", DRIVER, str(cluster.fake.port)]
    try:
        return subprocess.run(
            argv, cwd=cluster.roots[name], env=env, capture_output=True, text=True, timeout=STEP_LIMIT_S
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"the step in {name} still ran after {STEP_LIMIT_S}s: Tilt syncs no other container until it ends\n"
            f"{e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr}"
        )


def _sync(cluster: Cluster, name: str) -> None:
    """Tilt's `sync` step: the changed files land in that container."""
    for path in cluster.new_files.glob("*.py"):
        shutil.copy(path, cluster.roots[name] / "services" / path.name)


ORDERS = {
    "head-first": (HEAD, "worker-a", "worker-b"),
    "head-between": ("worker-a", HEAD, "worker-b"),
    "head-last": ("worker-a", "worker-b", HEAD),
}


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
def test_the_last_container_tilt_updates_leaves_every_replica_on_the_new_code(
    cluster: Cluster, order: tuple[str, ...]
) -> None:
    assert cluster.fake.deploys[-1].replicas == {"worker-a": cluster.old, "worker-b": cluster.old}
    assert cluster.new != cluster.old
    for name in order:
        _sync(cluster, name)
        before = len(cluster.fake.deploys)
        step = _step(cluster, name)
        assert step.returncode == 0, f"{name}: {step.stderr}"
    # The last container's step deployed, after every container had the new files.
    assert len(cluster.fake.deploys) > before, f"{order[-1]} did not redeploy:\n{step.stderr}"

    final = cluster.fake.deploys[-1]
    assert final.build == cluster.new, "Serve's build on the head imported old files"
    assert final.replicas == {"worker-a": cluster.new, "worker-b": cluster.new}, final
    assert cluster.fake.status == "RUNNING"
    values = [d.value for d in cluster.fake.deploys[1:]]
    assert len(set(values)) == len(values) and all(v.startswith(cluster.new) for v in values)


def test_a_worker_step_reports_a_failed_deploy_with_serves_message(cluster: Cluster) -> None:
    _sync(cluster, "worker-a")
    cluster.fake.fail_next = "ImportError: cannot import name 'Imagine' from 'services.app'"
    step = _step(cluster, "worker-a")
    assert step.returncode == 1
    assert "failed to deploy" in step.stderr and "cannot import name 'Imagine'" in step.stderr


def test_a_step_outside_a_kuberay_pod_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert reload.main() == 1
    assert "KubeRay sets it in every Ray container" in capsys.readouterr().err
    with pytest.raises(BringUpError, match="RAY_ADDRESS"):
        reload.head_host({"RAY_ADDRESS": "no-port"})


def test_the_head_is_found_through_kuberays_ray_address() -> None:
    # ray-project/kuberay v1.7.0, ray-operator/controllers/ray/common/pod.go `setContainerEnvVars`.
    assert reload.head_host({"RAY_ADDRESS": "127.0.0.1:6379"}) == "127.0.0.1"
    fqdn = "dogbooth-x7k2p-head-svc.dogbooth.svc.cluster.local"
    assert reload.head_host({"RAY_ADDRESS": f"{fqdn}:6379"}) == fqdn


def test_the_network_policy_lets_a_worker_reach_its_heads_dashboard_and_no_one_else() -> None:
    profile = profiles.load("kind-cpu")
    objects = chart.manifests(chart.render_manifests(chart.chart_values(profile)))
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    (rayservice,) = [o for o in objects if o["kind"] == "RayService"]
    own = policy["spec"]["podSelector"]["matchLabels"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        assert own.items() <= group["template"]["metadata"]["labels"].items()
    dashboard = next(p["containerPort"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
                     if p["name"] == "dashboard")  # fmt: skip
    admitted = [
        rule.get("from", [])
        for rule in policy["spec"]["ingress"]
        if not rule.get("ports") or dashboard in [p["port"] for p in rule["ports"]]
    ]
    assert [{"podSelector": {"matchLabels": own}}] in admitted, "the release's Ray pods may not reach the dashboard"
    assert [] not in admitted, "the dashboard is open to every source"
