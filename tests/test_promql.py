"""Every metric a shipped Grafana dashboard reads is one the app or Ray exports.

The names come from a live scrape of the session's local stack (every exporter Ray lists in its
Prometheus service-discovery file: the node's metrics agent, the dashboard's and the autoscaler's),
after requests, so the app's own metrics have values. DCGM_* names come from the pinned
dcgm-exporter chart's default counters (tests/data). Ray's own dashboards, shipped as Ray writes
them, also read metrics a CPU-only HTTP stack never exports (gRPC, GPUs, adapters): each such name
is listed below with the reason, and must still be one the installed Ray defines.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from functools import cache
from pathlib import Path

import pytest
import requests
from conftest import Stack

from dogbooth.core.errors import BringUpError
from dogbooth.core.polling import poll
from dogbooth.platforms import local, promscrape
from dogbooth.render import dashboards
from dogbooth.render.promql import PromQLSyntaxError, dashboard_exprs, metric_names, name_patterns, template_expr
from dogbooth.render.releases import DCGM_EXPORTER_VERSION

DCGM_COUNTERS = Path(__file__).parent / "data" / f"dcgm-exporter-{DCGM_EXPORTER_VERSION}-counters.csv"
RAY_FILES = set(dashboards.RAY_DASHBOARDS.values())
_GRPC = "Serve's gRPC proxy: dogbooth serves HTTP only"
_GPU = "Ray's GPU node metrics: the local stack has no GPU"
# Gauges the proxy and router set once requests pass; the poll below waits for ours, not these.
_ROUTED = "a proxy or router gauge: exported only after requests, not always within the poll"
_ADAPTER = "serve.multiplexed: only once a replica loads a LoRA adapter (tests/test_adapters.py does)"
NOT_EXPORTED_LOCALLY = {
    "ray_serve_num_grpc_requests_total": _GRPC,
    "ray_serve_num_grpc_error_requests_total": _GRPC,
    "ray_serve_grpc_request_latency_ms_bucket": _GRPC,
    "ray_serve_num_ongoing_grpc_requests": _GRPC,
    "ray_node_gpus_utilization": _GPU,
    "ray_node_gram_used": _GPU,
    "ray_node_gram_available": _GPU,
    "autoscaler_recently_failed_nodes": "the autoscaler's: only after a node failed to start",
    "ray_serve_deployment_error_counter_total": "only after a replica raised (the app answers errors itself)",
    "ray_serve_num_scheduling_tasks": _ROUTED,
    "ray_serve_num_scheduling_tasks_in_backoff": _ROUTED,
    "ray_serve_num_ongoing_http_requests": _ROUTED,
    # Ray's Route variable names the counter without the `_total` every Prometheus counter gets, so
    # it lists no routes and stays at All (.*): the panels still show every route.
    "ray_serve_deployment_request_counter": "upstream: Ray 2.60's Route variable omits `_total`",
    "ray_serve_multiplexed_get_model_requests_counter_total": _ADAPTER,
    "ray_serve_multiplexed_model_load_latency_ms_bucket": _ADAPTER,
    "ray_serve_multiplexed_model_unload_latency_ms_bucket": _ADAPTER,
    "ray_serve_multiplexed_models_load_counter_total": _ADAPTER,
    "ray_serve_multiplexed_models_unload_counter_total": _ADAPTER,
    "ray_serve_num_multiplexed_models": _ADAPTER,
    "ray_serve_registered_multiplexed_model_id": _ADAPTER,
}


def _dcgm_fields() -> set[str]:
    lines = DCGM_COUNTERS.read_text().splitlines()
    return {line.split(",")[0].strip() for line in lines if line.strip() and not line.startswith("#")}


def _exprs_by_file() -> dict[str, list[str]]:
    paths = sorted(dashboards.DASHBOARDS_DIR.glob("*.json"))
    return {p.name: [expr for _where, expr in dashboard_exprs(json.loads(p.read_text()))] for p in paths}


def _names_by_file() -> dict[str, set[str]]:
    return {name: set().union(*map(metric_names, exprs)) for name, exprs in _exprs_by_file().items()}


def _patterns() -> set[str]:
    """`{__name__=~"..."}` selectors of every dashboard (Ray's latency panels use one)."""
    return set().union(*(name_patterns(e) for exprs in _exprs_by_file().values() for e in exprs))


@cache
def _ray_metric_patterns() -> list[re.Pattern[str]]:
    """Metric names the installed Ray defines: string literals in its metrics code, f-string fields as wildcards."""
    import ray

    root = Path(ray.__file__).parent
    sources = [*root.glob("serve/**/*.py"), *root.glob("dashboard/**/*.py"), *root.glob("autoscaler/**/*.py")]
    literals = {m for p in sources for m in re.findall(r"""f?["']([a-z][a-z0-9_{}]*)["']""", p.read_text())}
    return [re.compile(re.sub(r"\\\{[^}]*\\\}", "[a-z]+", re.escape(lit))) for lit in literals if "_" in lit]


def _defined_by_ray(name: str) -> bool:
    base = re.sub(r"_(total|bucket|sum|count)$", "", name)
    base = base.removeprefix("ray_").removeprefix("autoscaler_")
    return any(p.fullmatch(base) for p in _ray_metric_patterns())


# --- the tokenizer: cheap, no stack -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{route=~"$Route",x!~"/-/.*"}[5m]))', {"a_bucket"}),
        ("histogram_quantile(0.95, sum(rate(b_bucket[$__rate_interval])) by (le, instance))", {"b_bucket"}),
        ("sum(rate(c_total[5m] offset 1h)) / on() group_left(node) (d or vector(0))", {"c_total", "d"}),
        ('{__name__="e", job="ray"} and max_over_time(f[1h:5m]) > 1e3', {"e", "f"}),
        ("count without (instance) (g == bool 1) * Inf - NaN", {"g"}),
        ("topk(5, h) unless ignoring(pod) i", {"h", "i"}),
        ('sum(j{l="a}b(c)"}) by (l) + ${threshold} - k @ end()', {"j", "k"}),
        ("sum:rule:recorded / 1.5e-3", {"sum:rule:recorded"}),
        ('rate({__name__=~"a_(b|c)_total", x="y"}[5m])', set()),  # a pattern: name_patterns, below
    ],
)
def test_metric_names_skip_functions_labels_keywords_and_durations(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ["sum(rate(a[5m])", "a{b='c'", "rate(a[5m)", "a)", "a ? b"])
def test_malformed_promql_is_an_error_not_an_empty_answer(expr: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        metric_names(expr)


def test_name_patterns_are_read_from_regex_name_matchers() -> None:
    assert name_patterns('sum(rate({__name__=~ "a_(http|grpc)_ms_bucket", m!~"/x\\\\..*"}[5m])) / b') == {
        "a_(http|grpc)_ms_bucket"
    }
    assert metric_names('{__name__="a"} + {__name__=~"b.*"}') == {"a"}


def test_template_variables_give_their_selector() -> None:
    assert template_expr('label_values(m{a=~"$A"}, application)') == 'm{a=~"$A"}'
    assert template_expr("label_values(up, job)") == "up"
    assert template_expr("label_values(application)") is None  # a label, no metric
    assert template_expr("query_result(sum(rate(x_total[5m])))") == "sum(rate(x_total[5m]))"


def test_every_dashboard_has_queries_and_the_exceptions_are_ray_names() -> None:
    by_file = _names_by_file()
    assert set(by_file) == {dashboards.SERVING_FILE, *RAY_FILES}
    assert all(by_file.values())
    ray_names = set().union(*(by_file[f] for f in RAY_FILES))
    assert set(NOT_EXPORTED_LOCALLY) <= ray_names, "an exception no Ray dashboard needs any more"
    assert not set(NOT_EXPORTED_LOCALLY) & by_file[dashboards.SERVING_FILE], "ours must all be live"
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"} <= _dcgm_fields()
    assert _patterns(), "Ray's latency panels select by a __name__ regex: the check below must see it"


# --- the live check -----------------------------------------------------------------------------


def _exporters(stack: Stack) -> list[str]:
    """Every Prometheus endpoint of the stack's Ray, from the service-discovery file Ray writes."""
    state = local.LocalState.read(stack.profile.name)
    assert state is not None, "the session stack wrote no state"
    groups = json.loads((Path(state.temp_dir) / "prom_metrics_service_discovery.json").read_text())
    targets = {f"http://{t}/metrics" for g in groups for t in g["targets"]}
    return sorted(targets | ({state.metrics_url} if state.metrics_url else set()))


def _scrape(urls: list[str], silent: set[str]) -> set[str]:
    """Names on every exporter that answers; `silent` collects those that do not."""
    names: set[str] = set()
    for url in urls:
        try:
            names |= promscrape.fetch(url).names()
        except promscrape.MetricsUnavailable:
            silent.add(url)
    return names


def test_every_dashboard_metric_is_exported(stack: Stack) -> None:
    urls = _exporters(stack)
    ours = _names_by_file()[dashboards.SERVING_FILE] - _dcgm_fields()
    # A refused body and an unknown route, so Serve's error counters exist too.
    assert requests.get(stack.endpoint, params={"steps": 99999}, timeout=60).status_code == 422
    assert requests.get(f"{stack.base_url}/no-such-route", timeout=60).status_code == 404
    seen: set[str] = set()
    silent: set[str] = set()

    def all_of_ours() -> bool | None:
        r = requests.get(stack.endpoint, params={"prompt": "promql", "steps": 2}, timeout=60)
        assert r.status_code == 200, r.text
        seen.update(_scrape(urls, silent))  # Ray's agent reports every ~10 s: poll, never sleep
        return True if ours <= seen else None

    with contextlib.suppress(BringUpError):  # the asserts below name what never came
        poll("the dashboards' metrics on Ray's exporters", all_of_ours, timeout_s=90, interval_s=2)
    assert sorted(ours - seen) == [], f"dogbooth serving reads metrics nobody exports ({urls})"
    explained = dict(NOT_EXPORTED_LOCALLY)
    if not any(n.startswith("autoscaler_") for n in seen):
        # Ray's autoscaler exports on a fixed port (44217, AUTOSCALER_METRIC_PORT): with another Ray
        # on this machine holding it, this head has no autoscaler exporter. Checked by definition then.
        warnings.warn(f"no autoscaler exporter among {urls}: autoscaler_* checked in Ray's source", stacklevel=1)
        explained.update({n: "no autoscaler exporter" for n in set().union(*_names_by_file().values())
                          if n.startswith("autoscaler_")})  # fmt: skip
    for pattern in sorted(_patterns()):
        assert any(re.fullmatch(pattern, n) for n in seen), f"{{__name__=~{pattern!r}}} matches no exported metric"
    for name in sorted(RAY_FILES):
        missing = _names_by_file()[name] - seen
        unexplained = sorted(missing - set(explained))
        assert unexplained == [], f"{name} reads metrics the local stack never exported: {unexplained}" + (
            f" (exporters that never answered: {sorted(silent)})" if silent else ""
        )
        assert [m for m in sorted(missing) if not _defined_by_ray(m)] == [], "not even defined in the installed Ray"
