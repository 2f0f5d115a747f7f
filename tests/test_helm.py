"""dogbooth.platforms.helm through pyhelm3 against a stand-in `helm` executable that records what it was asked.

No helm binary can be installed here; the stand-in answers the few subcommands pyhelm3 uses
(version, show chart, status, upgrade --install, uninstall) the way Helm 3 does, so these tests
check what dogbooth sends to Helm and how Helm's failures come back, through real subprocesses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from faketools import only_on_path

from dogbooth.core.errors import CommandFailed
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms.helm import Helm, KubeTarget
from dogbooth.render.releases import Release

FAKE_HELM = r"""#!{python}
import json, sys
args = sys.argv[1:]
log = open({log!r}, "a")
if args[:1] == ["version"]:
    sys.stdout.write("v3.16.2"); sys.exit(0)  # helm prints the template without a newline
if args[:2] == ["show", "chart"]:
    print("apiVersion: v2\nname: kuberay-operator\nversion: 1.7.0\n"); sys.exit(0)
if args[:1] == ["status"]:
    print("Error: release: not found", file=sys.stderr); sys.exit(1)
if args[:1] == ["upgrade"]:
    values = json.loads(sys.stdin.read())
    log.write(json.dumps({{"argv": args, "values": values}}) + "\n")
    if values.get("fail"):
        print("Error: INSTALLATION FAILED: context deadline exceeded", file=sys.stderr); sys.exit(1)
    ns = args[args.index("--namespace") + 1]
    print(json.dumps({{"name": args[1], "namespace": ns, "version": 1, "manifest": "",
                      "info": {{"status": "deployed", "last_deployed": "2026-01-01T00:00:00Z"}}}}))
    sys.exit(0)
if args[:1] == ["uninstall"]:
    log.write(json.dumps({{"argv": args}}) + "\n")
    print("Error: uninstall: Release not loaded: x: release: not found", file=sys.stderr); sys.exit(1)
sys.exit(2)
"""


@pytest.fixture
def helm_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "helm.log"
    only_on_path(tmp_path, monkeypatch, "helm", FAKE_HELM.format(python=sys.executable, log=str(log)))
    return log


def _calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_ensure_installs_the_pinned_chart_with_values(helm_log: Path) -> None:
    release = Release(
        "kuberay-operator",
        "kuberay-system",
        "kuberay-operator",
        "https://ray-project.github.io/kuberay-helm/",
        "1.7.0",
        {"image": {"tag": "v1.7.0"}},
    )
    Helm(KubeTarget(context="kind-dogbooth")).ensure(release)
    (call,) = _calls(helm_log)
    argv = call["argv"]
    assert isinstance(argv, list)
    assert argv[:3] == ["upgrade", "kuberay-operator", "kuberay-operator"] and "--install" in argv
    for flag, value in (
        ("--namespace", "kuberay-system"),
        ("--version", "1.7.0"),
        ("--repo", "https://ray-project.github.io/kuberay-helm/"),
        ("--kube-context", "kind-dogbooth"),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert "--create-namespace" in argv and "--wait" in argv
    assert call["values"] == {"image": {"tag": "v1.7.0"}}


def test_local_chart_goes_by_path(helm_log: Path) -> None:
    release = Release("dogbooth", "dogbooth", "charts/dogbooth", "", "0.1.0", {"x": 1}, phase="app")
    Helm(KubeTarget(kubeconfig=Path("/tmp/kc"))).ensure(release, chart_path=REPO_ROOT / "charts" / "dogbooth")
    argv = _calls(helm_log)[0]["argv"]
    assert isinstance(argv, list)
    assert (
        argv[2] == str(REPO_ROOT / "charts" / "dogbooth") and "--repo" not in argv  # helm ignores --version here
    )
    assert argv[argv.index("--kubeconfig") + 1] == "/tmp/kc"


def test_helm_failure_becomes_command_failed_with_stderr(helm_log: Path) -> None:
    release = Release("x", "ns", "c", "https://example.invalid/charts", "1.0.0", {"fail": True})
    with pytest.raises(CommandFailed) as info:
        Helm(KubeTarget(context="kind-dogbooth")).ensure(release)
    assert "context deadline exceeded" in info.value.stderr
    assert info.value.argv[:3] == ["helm", "upgrade", "--install"]


def test_uninstall_of_a_missing_release_is_fine(helm_log: Path) -> None:
    Helm(KubeTarget(context="kind-dogbooth")).uninstall("ingress-nginx", "ingress-nginx")
    argv = _calls(helm_log)[0]["argv"]
    assert isinstance(argv, list)
    assert argv[:2] == ["uninstall", "ingress-nginx"] and "--wait" in argv
