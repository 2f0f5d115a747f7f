"""The Tiltfile and its inputs, without Tilt: Starlark is a Python subset, so the Tiltfile runs here
against a recorder of Tilt's API, and what it would build, sync, deploy and forward is checked
against the Dockerfile, the chart and the profile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from dogbooth import cli
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import forward
from dogbooth.render import tilt
from dogbooth.settings import profiles


class Recorder:
    """Tilt's Tiltfile API as far as ours uses it: each call is recorded by name."""

    def __init__(self, profile: str) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.profile = profile

    def record(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return (name, args, kwargs)

        return call

    def local(self, argv: list[str], quiet: bool = False) -> str:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True).stdout

    def namespace(self) -> dict[str, Any]:
        names = ["docker_build", "fall_back_on", "sync", "run", "watch_file", "k8s_yaml", "k8s_kind"]
        names += ["k8s_resource", "local_resource", "probe", "tcp_socket_action", "blob"]
        ns: dict[str, Any] = {n: self.record(n) for n in names}
        ns["blob"] = lambda text: text
        ns["decode_json"] = json.loads
        ns["local"] = self.local
        ns["os"] = SimpleNamespace(
            getenv=lambda key, default=None: {"DOGBOOTH_PYTHON": sys.executable}.get(key, default)
        )
        parsed = {"profile": self.profile}
        ns["config"] = SimpleNamespace(define_string=lambda name: None, parse=lambda: parsed)
        return ns

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]


@pytest.fixture(scope="module", params=["kind-cpu", "kind-gpu"])
def tilt_run(request: pytest.FixtureRequest) -> Recorder:
    recorder = Recorder(request.param)
    exec(compile((REPO_ROOT / "Tiltfile").read_text(), "Tiltfile", "exec"), recorder.namespace())
    return recorder


def test_the_tiltfile_builds_the_profiles_image_with_the_dockerfiles_context(tilt_run: Recorder) -> None:
    profile = profiles.load(tilt_run.profile)
    assert profile.chart is not None
    ((args, kwargs),) = tilt_run.named("docker_build")
    assert args == (profile.chart.image.repository, ".")
    assert kwargs["build_args"] == {"VARIANT": profile.chart.image.variant}
    dockerfile = (REPO_ROOT / kwargs["dockerfile"]).read_text()
    copied = re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", dockerfile, re.M)
    sources = {src for line in copied for src in line.split()}
    assert sources <= set(kwargs["only"]), f"the Dockerfile copies {sources - set(kwargs['only'])} Tilt leaves out"


def test_live_update_syncs_services_where_the_image_has_them_then_reloads(tilt_run: Recorder) -> None:
    ((_, sync_args),) = [(n, a) for n, a, _ in tilt_run.calls if n == "sync"]
    dockerfile = (REPO_ROOT / "services" / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1]
    assert sync_args == ("services", f"{workdir}/services")
    ((run_args, run_kwargs),) = tilt_run.named("run")
    module = run_args[0].split()[-1]
    assert run_args[0] == f"python -m {module}" and (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert run_kwargs["trigger"] == ["services"]
    ((fallback,), _) = tilt_run.named("fall_back_on")[0]
    assert "services" not in fallback and {"dogbooth", "training", "pyproject.toml"} <= set(fallback)


def _select(obj: Any, path: str) -> list[Any]:
    """A JSONPath of the `{.a.b[*].c}` kind that Tilt's image_json_path takes, over plain dicts."""
    nodes = [obj]
    for key in path.strip("{}.").split("."):
        name, spread = key.removesuffix("[*]"), key.endswith("[*]")
        nodes = [n[name] for n in nodes]
        nodes = [x for n in nodes for x in n] if spread else nodes
    return nodes


def test_the_rayservice_images_are_where_tilt_is_told_to_look(tilt_run: Recorder) -> None:
    ((manifests,), _) = tilt_run.named("k8s_yaml")[0]
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dogbooth"}}
    (rayservice,) = [d for d in docs if d["kind"] == "RayService"]
    (_, kwargs) = tilt_run.named("k8s_kind")[0]
    assert len(kwargs["image_json_path"]) == 2  # the head and the worker groups
    for path in kwargs["image_json_path"]:
        images = _select(rayservice, path)
        assert images and all(i.startswith("dogbooth-serve:") for i in images), (path, images)


def test_forwards_use_the_profiles_context_and_ports_on_loopback_only(tilt_run: Recorder) -> None:
    profile = profiles.load(tilt_run.profile)
    assert profile.cluster is not None and profile.cluster.kind is not None
    forwards = [(a, k) for a, k in tilt_run.named("local_resource") if "readiness_probe" in k]
    assert len(forwards) == 2
    services = {}
    for _, kwargs in forwards:
        cmd = kwargs["serve_cmd"]
        # The Tiltfile's DOGBOOTH_PYTHON runs the supervising module (dogbooth/platforms/forward.py).
        assert cmd[:3] == [sys.executable, "-m", "dogbooth.platforms.forward"]
        fwd = forward.parse_args(cmd[3:])
        kubectl = fwd.forward_argv()
        assert kubectl[:3] == ["kubectl", "--context", profile.cluster.kind.context]
        assert kubectl[kubectl.index("--address") + 1] == "127.0.0.1"
        assert fwd.find_argv()[:3] == kubectl[:3]  # the wait for the Service asks the same cluster
        # Tilt's readiness probe knocks where the forward listens.
        assert kwargs["readiness_probe"][2]["tcp_socket"] == ("tcp_socket_action", (fwd.port,), {"host": "127.0.0.1"})
        services[fwd.service] = fwd.port
    # KubeRay's Services for a RayService: <name>-serve-svc and <name>-head-svc (kuberay v1.7.0, utils/util.go).
    assert services == {"dogbooth-serve-svc": profile.serve.http_port, "dogbooth-head-svc": profile.ray.dashboard_port}


def test_objects_grouped_in_the_resource_are_those_rendered(tilt_run: Recorder) -> None:
    ((manifests,), _) = tilt_run.named("k8s_yaml")[0]
    rendered = {f"{d['metadata']['name']}:{d['kind'].lower()}" for d in yaml.safe_load_all(manifests) if d}
    ((name,), kwargs) = tilt_run.named("k8s_resource")[0]
    assert name == tilt.RESOURCE
    assert set(kwargs["objects"]) == rendered - {"dogbooth:rayservice"}


def test_tilt_config_refuses_a_profile_that_is_not_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tilt-config", "--profile", "eks"]) == 1
    assert "profile eks is platform eks; Tilt runs on kind" in capsys.readouterr().err


def test_kind_runs_the_roll_watcher_since_kuberay_does_not_roll_under_none(tilt_run: Recorder) -> None:
    profile = profiles.load(tilt_run.profile)
    assert profile.chart is not None and profile.chart.upgrade_strategy == "None"
    watchers = [k for _, k in tilt_run.named("local_resource") if "readiness_probe" not in k]
    (watcher,) = watchers
    cmd = watcher["serve_cmd"]
    assert cmd[1:3] == ["-m", "dogbooth.platforms.roll"] and "--watch" in cmd
    assert cmd[cmd.index("--namespace") + 1] == profile.chart.namespace
    assert watcher["resource_deps"] == [tilt.RESOURCE]
