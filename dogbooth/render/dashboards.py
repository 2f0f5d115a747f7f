"""Grafana dashboards the chart ships as ConfigMaps for kube-prometheus-stack's Grafana sidecar.

Two sources:
- `dogbooth-serving.json`, built here from `PANELS`: traffic, latency, images, batching, admission,
  errors, the replica's memory and the GPUs (DCGM), each panel one PromQL query or a few;
- Ray's Serve dashboards, byte for byte what the pinned Ray writes under
  `<temp dir>/session_latest/metrics/grafana/dashboards/` when a head starts (Ray's own
  grafana_dashboard_factory makes both).

Helm reads chart files, not Python, so all three are stored under charts/dogbooth/dashboards/;
`python -m dogbooth.render.dashboards` rewrites them, and tests/test_dashboards.py fails when they
are stale. Ray is imported here, so the CLI and the chart rendering never import this module.
Every query reads Prometheus through a `datasource` variable of type prometheus, as
Ray's do: Grafana fills it with the default Prometheus datasource (kube-prometheus-stack's).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ray.dashboard.modules.metrics import grafana_dashboard_factory

from dogbooth.core.paths import REPO_ROOT
from dogbooth.render.serveconfig import APP_NAME
from services import metrics as app

DASHBOARDS_DIR = REPO_ROOT / "charts" / "dogbooth" / "dashboards"
SERVING_FILE = "dogbooth-serving.json"
SERVING_UID = "dogbooth-serving"
# Ray's factory function -> the file name Ray itself gives the dashboard in the session directory.
RAY_DASHBOARDS = {
    "generate_serve_grafana_dashboard": "serve_grafana_dashboard.json",
    "generate_serve_deployment_grafana_dashboard": "serve_deployment_grafana_dashboard.json",
}

_RATE = "[$__rate_interval]"
_APP = f'application="{APP_NAME}"'


def _mean(metric: str, by: str = "") -> str:
    """Mean of a histogram over the window: rate of its sum over rate of its count."""
    group = f" by ({by})" if by else ""
    return f"sum{group}(rate({metric}_sum{_RATE})) / sum{group}(rate({metric}_count{_RATE}))"


def _quantile(q: float, bucket: str, match: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({bucket}{{{match}}}{_RATE})))"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str  # Grafana's unit id: reqps, ms, s, bytes, percent, decmbytes, short
    queries: tuple[tuple[str, str], ...]  # (legend, PromQL)


# Serve's own proxy metrics (Ray 2.60, ray/serve/_private/proxy.py), as exported.
_LATENCY = "ray_serve_http_request_latency_ms_bucket"
_REQUESTS = "ray_serve_num_http_requests_total"
# The app's (services/metrics.py), as exported.
_IMAGES, _ADMISSION, _RSS = (app.EXPORTED[k] for k in (app.IMAGES, app.ADMISSION, app.RSS))
_BATCH, _WAIT = app.EXPORTED[app.BATCH_SIZE], app.EXPORTED[app.QUEUE_WAIT]
_GENERATE, _ENCODE = app.EXPORTED[app.GENERATE], app.EXPORTED[app.ENCODE]

PANELS: tuple[Panel, ...] = (
    Panel("Requests/s by status", "HTTP requests the Serve proxies answered, by status code.", "reqps",
          (("{{status_code}}", f"sum by (status_code) (rate({_REQUESTS}{{{_APP}}}{_RATE}))"),)),
    Panel("Latency p50 / p95 / p99", "End-to-end latency at the Serve proxy (Serve's HTTP latency histogram).",
          "ms", tuple((f"p{round(q * 100)}", _quantile(q, _LATENCY, _APP)) for q in (0.5, 0.95, 0.99))),
    Panel("Images/s by model and adapter", "Images the replicas generated.", "short",
          (("{{model}} {{adapter}}", f"sum by (model, adapter) (rate({_IMAGES}{_RATE}))"),)),
    Panel("Batch size", "Requests per batch the replicas ran: mean, and p95.", "short",
          (("mean", _mean(_BATCH)), ("p95", _quantile(0.95, f"{_BATCH}_bucket")))),
    Panel("Queue wait against generate and encode", "Mean seconds a request waited for its batch, "
          "then spent in the diffusion steps, then in PNG encoding.", "s",
          (("queue wait", _mean(_WAIT)), ("generate", _mean(_GENERATE)), ("encode", _mean(_ENCODE)))),
    Panel("Admission decisions", "Requests the replica took or refused (503 at once) by outcome.", "reqps",
          (("{{outcome}}", f"sum by (outcome) (rate({_ADMISSION}{_RATE}))"),)),
    Panel("5xx/s", "Server errors at the proxy: 503 refusals and overload, 500 failures.", "reqps",
          (("{{status_code}}",
            f'sum by (status_code) (rate({_REQUESTS}{{{_APP},status_code=~"5.."}}{_RATE}))'),)),
    Panel("Replica memory (RSS)", "Resident memory of each replica process.", "bytes",
          (("{{replica}}", _RSS),)),
    Panel("GPU utilisation", "DCGM exporter, per GPU: percent of time a kernel ran.", "percent",
          (("{{Hostname}} gpu {{gpu}}", "avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL)"),)),
    Panel("GPU memory used", "DCGM exporter, per GPU: framebuffer memory used and free (MiB).", "decmbytes",
          (("{{Hostname}} gpu {{gpu}} used", "avg by (Hostname, gpu) (DCGM_FI_DEV_FB_USED)"),
           ("{{Hostname}} gpu {{gpu}} free", "avg by (Hostname, gpu) (DCGM_FI_DEV_FB_FREE)"))),
)  # fmt: skip

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(index: int, panel: Panel) -> dict[str, object]:
    targets = [
        {"datasource": _DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (legend, expr) in enumerate(panel.queries)
    ]
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def serving_dashboard() -> dict[str, object]:
    """The "dogbooth serving" dashboard as Grafana JSON (schema of Grafana 11/12 dashboards)."""
    datasource = {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "hide": 0, "current": {}, "options": [], "refresh": 1}  # fmt: skip
    return {
        "uid": SERVING_UID,
        "title": "dogbooth serving",
        "tags": ["dogbooth", "ray-serve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [datasource]},
        "panels": [_panel(i, p) for i, p in enumerate(PANELS)],
    }


def ray_dashboard(factory: str) -> str:
    """Ray's own dashboard JSON from the installed (pinned) Ray, as its head writes it."""
    content, _uid = getattr(grafana_dashboard_factory, factory)()
    return str(content)


def generated() -> dict[str, str]:
    """File name under charts/dogbooth/dashboards/ -> the text it must hold."""
    files = {SERVING_FILE: json.dumps(serving_dashboard(), indent=2) + "\n"}
    files.update({name: ray_dashboard(factory) for factory, name in RAY_DASHBOARDS.items()})
    return files


def write(target: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write the dashboards into `target`; returns the paths."""
    target.mkdir(parents=True, exist_ok=True)
    files = generated()
    for name, text in files.items():
        (target / name).write_text(text)
    return sorted(target / name for name in files)


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARDS_DIR):
        print(path)
