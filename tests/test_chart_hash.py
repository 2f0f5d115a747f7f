"""An edited template of our own chart is applied by the next `up` (issue 11, defect 14).

pyhelm3 upgrades only when the deployed revision's chart name, chart version or values differ
(azimuth-cloud/pyhelm3, pyhelm3/client.py, `Client.should_install_or_upgrade_release`, called by
`ensure_release`), so an edit under charts/dogbooth/templates with the same Chart.yaml and values
changed nothing. These tests run dogbooth.platforms.helm through the real pyhelm3 against a stand-in
`helm` that keeps releases the way Helm does (revision, values, chart metadata, description).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from faketools import only_on_path

from dogbooth.platforms import helm
from dogbooth.platforms.helm import Helm, KubeTarget
from dogbooth.render.chart import CHART_DIR
from dogbooth.render.releases import Release

# Helm 3's answers to what pyhelm3 asks: the release lives in a JSON file; `upgrade` records the
# chart's Chart.yaml, the values from stdin and --description, as a new revision.
FAKE_HELM = r"""#!{python}
import json, os, sys, yaml
args = sys.argv[1:]
store = {store!r}
release = json.load(open(store)) if os.path.exists(store) else None
if args[:1] == ["version"]:
    sys.stdout.write("v3.16.2"); sys.exit(0)
if args[:2] == ["show", "chart"]:
    print(open(os.path.join(args[2], "Chart.yaml")).read()); sys.exit(0)
if args[:1] in (["status"], ["get"]) and release is None:
    print("Error: release: not found", file=sys.stderr); sys.exit(1)
status = lambda r: {{"name": r["name"], "namespace": r["namespace"], "version": r["revision"], "manifest": "",
                    "info": {{"status": "deployed", "last_deployed": "2026-01-01T00:00:00Z",
                             "description": r["description"]}}}}
if args[:1] == ["status"]:
    print(json.dumps(status(release))); sys.exit(0)
if args[:2] == ["get", "values"]:
    print(json.dumps(release["values"])); sys.exit(0)
if args[:2] == ["get", "all"]:  # pyhelm3's chart metadata template
    print(yaml.safe_dump(release["chart"])); sys.exit(0)
if args[:1] == ["upgrade"]:
    chart = yaml.safe_load(open(os.path.join(args[2], "Chart.yaml")))
    description = args[args.index("--description") + 1] if "--description" in args else "Upgrade complete"
    release = {{"name": args[1], "namespace": args[args.index("--namespace") + 1],
               "revision": (release or {{"revision": 0}})["revision"] + 1, "values": json.loads(sys.stdin.read()),
               "chart": {{"apiVersion": chart["apiVersion"], "name": chart["name"], "version": chart["version"]}},
               "description": description}}
    json.dump(release, open(store, "w"))
    print(json.dumps(status(release))); sys.exit(0)
sys.exit(2)
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "release.json"
    only_on_path(tmp_path, monkeypatch, "helm", FAKE_HELM.format(python=sys.executable, store=str(store)))
    return store


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    copy = tmp_path / "chart" / "dogbooth"
    shutil.copytree(CHART_DIR, copy)
    return copy


def _revision(store: Path) -> int:
    return int(json.loads(store.read_text())["revision"])


RELEASE = Release("dogbooth", "dogbooth", "charts/dogbooth", "", "0.1.0", {"image": {"tag": "abc"}}, phase="app")


def test_an_edited_template_upgrades_and_an_unchanged_chart_does_not(store: Path, chart: Path) -> None:
    client = Helm(KubeTarget(context="kind-dogbooth"))
    client.ensure(RELEASE, chart_path=chart)
    assert _revision(store) == 1
    client.ensure(RELEASE, chart_path=chart)
    assert _revision(store) == 1, "same chart, same values: nothing to do"

    template = chart / "templates" / "networkpolicy.yaml"
    template.write_text(template.read_text() + "# an edit that changes no name, version or value\n")
    client.ensure(RELEASE, chart_path=chart)
    assert _revision(store) == 2, "the edited template was not applied"
    assert json.loads(store.read_text())["description"] == f"dogbooth.io/chart-hash={helm.chart_hash(chart)}"
    client.ensure(RELEASE, chart_path=chart)
    assert _revision(store) == 2


def test_values_still_decide_as_before(store: Path, chart: Path) -> None:
    client = Helm(KubeTarget(context="kind-dogbooth"))
    client.ensure(RELEASE, chart_path=chart)
    changed = Release(**{**RELEASE.to_dict(), "values": {"image": {"tag": "def"}}})
    client.ensure(changed, chart_path=chart)
    assert _revision(store) == 2


def test_the_hash_follows_the_content_not_the_place(tmp_path: Path, chart: Path) -> None:
    twin = tmp_path / "elsewhere" / "dogbooth"
    shutil.copytree(chart, twin)
    assert helm.chart_hash(twin) == helm.chart_hash(chart) == helm.chart_hash(CHART_DIR)
    (twin / "templates" / "NOTES.txt").write_text("a new file counts too\n")
    assert helm.chart_hash(twin) != helm.chart_hash(chart)


def test_a_repository_chart_is_compared_by_pyhelm3_alone(store: Path) -> None:
    release = Release("x", "ns", "charts/dogbooth", "https://example.invalid/charts", "0.1.0", {})
    store.write_text(json.dumps({
        "name": "x", "namespace": "ns", "revision": 4, "values": {}, "description": "Upgrade complete",
        "chart": {"apiVersion": "v2", "name": "dogbooth", "version": "0.1.0"},
    }))  # fmt: skip
    # `show chart` of a repository chart is answered from our copy's Chart.yaml by the stand-in.
    Helm(KubeTarget(context="kind-dogbooth")).ensure(Release(**{**release.to_dict(), "chart": str(CHART_DIR)}))
    assert _revision(store) == 4
