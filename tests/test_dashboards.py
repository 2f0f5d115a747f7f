"""The Grafana dashboards under charts/dogbooth/dashboards/: current, complete, and resolvable by Grafana.

Ray's are compared with what a live head of the pinned Ray wrote into its session directory, and
with Ray's own generator; ours with dogbooth.render.dashboards. Which metrics the queries read is
tests/test_promql.py's business.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack

from dogbooth.platforms import local
from dogbooth.render import dashboardplot, dashboards
from dogbooth.render.promql import dashboard_exprs

STALE = "charts/dogbooth/dashboards/ is stale: run python -m dogbooth.render.dashboards"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dashboards.DASHBOARDS_DIR / name).read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out, queue = [], list(dashboard["panels"])
    while queue:
        panel = queue.pop(0)
        queue.extend(panel.get("panels", []))
        out.append(panel)
    return out


def test_the_stored_dashboards_are_what_the_generators_write(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("RAY_GRAFANA_")]:  # Ray's own uid/filter overrides
        monkeypatch.delenv(key)
    stored = {p.name: p.read_text() for p in dashboards.DASHBOARDS_DIR.glob("*.json")}
    assert stored == dashboards.generated(), STALE


def test_rays_dashboards_are_what_a_running_head_writes(stack: Stack) -> None:
    state = local.LocalState.read(stack.profile.name)
    assert state is not None
    written = Path(state.temp_dir) / "session_latest" / "metrics" / "grafana" / "dashboards"
    for name in dashboards.RAY_DASHBOARDS.values():
        assert (written / name).read_text() == (dashboards.DASHBOARDS_DIR / name).read_text(), name


@pytest.mark.parametrize("name", [dashboards.SERVING_FILE, *dashboards.RAY_DASHBOARDS.values()])
def test_every_query_reads_the_default_prometheus_through_the_datasource_variable(name: str) -> None:
    dashboard = _load(name)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    refs = []
    for panel in _panels(dashboard):
        refs += [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]
    refs += [v.get("datasource") for v in variables.values() if v["type"] == "query"]
    uids = {r["uid"] if isinstance(r, dict) else r for r in refs if r is not None}
    assert uids == {"${datasource}"}, "a query pinned to a datasource uid Grafana may not have"


def test_dashboard_uids_are_unique_and_ours_has_every_panel_the_issue_asks_for() -> None:
    names = [dashboards.SERVING_FILE, *dashboards.RAY_DASHBOARDS.values()]
    assert len({_load(n)["uid"] for n in names}) == len(names)
    ours = _load(dashboards.SERVING_FILE)
    titles = " | ".join(p["title"].lower() for p in ours["panels"])
    for wanted in ("requests/s", "p50 / p95 / p99", "images/s", "batch size", "queue wait against generate",
                   "admission", "5xx", "gpu utilisation", "gpu memory"):  # fmt: skip
        assert wanted in titles, wanted
    assert len({p["id"] for p in ours["panels"]}) == len(ours["panels"])
    cells = [(x, y) for p in ours["panels"] for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]  # fmt: skip
    assert len(cells) == len(set(cells)), "panels overlap"
    assert all(p["targets"] for p in ours["panels"])
    assert len(dashboard_exprs(ours)) == sum(len(p.queries) for p in dashboards.PANELS)


# --- the pictures in docs/observability.md: dogbooth.render.dashboardplot's PromQL evaluator ------


def _recording() -> dashboardplot.Recording:
    """Two scrapes 10 s apart: a counter +20, a histogram of 10 requests (le 1: 4, le 2: 8, +Inf: 10)."""
    first = {"req_total": {frozenset({("code", "200")}): 100.0, frozenset({("code", "503")}): 0.0},
             "lat_bucket": {frozenset({("le", le)}): 0.0 for le in ("1", "2", "+Inf")}}  # fmt: skip
    second = {"req_total": {frozenset({("code", "200")}): 120.0, frozenset({("code", "503")}): 5.0},
              "lat_bucket": {frozenset({("le", "1")}): 4.0, frozenset({("le", "2")}): 8.0,
                             frozenset({("le", "+Inf")}): 10.0}}  # fmt: skip
    return dashboardplot.Recording([0.0, 10.0], [first, second])


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("sum(rate(req_total[1m]))", {(): 2.5}),
        ('sum by (code) (rate(req_total{code=~"5.."}[$__rate_interval]))', {(("code", "503"),): 0.5}),
        ("histogram_quantile(0.5, sum by (le) (rate(lat_bucket[1m])))", {(): 1.25}),  # 5th of 10: in (1, 2]
        ("histogram_quantile(0.99, sum(rate(lat_bucket[1m])) by (le))", {(): 2.0}),  # in +Inf: the last bound
        ("sum(req_total) / on() (sum(missing) or vector(0))", {(): math.nan}),
        ("avg(req_total) * 2 - 1", {(): 124.0}),
    ],
)
def test_the_picture_evaluator_follows_prometheus(expr: str, want: dict[tuple[tuple[str, str], ...], float]) -> None:
    got = {tuple(sorted(k)): v for k, v in dashboardplot.evaluate(expr, _recording(), 10.0).items()}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, nan_ok=True)


@pytest.mark.parametrize("name", [dashboards.SERVING_FILE, *dashboards.RAY_DASHBOARDS.values()])
def test_the_picture_evaluator_reads_every_shipped_query(name: str) -> None:
    empty = dashboardplot.Recording([0.0], [{}])
    for where, expr in dashboard_exprs(_load(name)):
        if where.startswith("panel"):
            assert dashboardplot.evaluate(expr, empty, 0.0) == {} or "vector(" in expr, (where, expr)
