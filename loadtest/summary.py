"""Turn Locust's CSV output into `summary.json` and `summary.md`.

Locust writes `<prefix>_stats.csv` (one row per request name plus "Aggregated"),
`<prefix>_stats_history.csv` (one row per second with `--csv-full-history`) and
`<prefix>_failures.csv`. The locustfile adds `<prefix>_status.json` (HTTP status counts).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSV_PREFIX = "locust"
SUMMARY_KEYS = (
    "p50_ms", "p95_ms", "p99_ms", "mean_ms", "images_per_s", "requests", "failures", "error_rate",
    "status_counts", "users", "run_time_s", "profile", "model", "git_rev",
)  # fmt: skip


class SummaryError(ValueError):
    """Locust's output is missing or not what this code understands."""


@dataclass(frozen=True)
class RunInfo:
    """What the CSVs do not say: who was tested, how, and from which code."""

    users: int
    run_time_s: float
    profile: str
    model: str
    git_rev: str
    host: str = ""
    shape: str = "steady"


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise SummaryError(f"{path} is missing: did Locust run with --csv {path.parent}/{CSV_PREFIX}?") from e


def _num(row: dict[str, str], column: str, path: Path) -> float:
    value = row.get(column)
    if value is None:
        raise SummaryError(f"{path}: no column {column!r} (columns: {', '.join(row)})")
    if value in ("", "N/A"):
        return 0.0
    try:
        return float(value)
    except ValueError as e:
        raise SummaryError(f"{path}: column {column!r} has {value!r}, not a number") from e


def aggregated_row(report_dir: Path) -> dict[str, str]:
    path = report_dir / f"{CSV_PREFIX}_stats.csv"
    for row in _read_rows(path):
        if row.get("Name") == "Aggregated":
            return row
    raise SummaryError(f"{path}: no Aggregated row")


def status_counts(report_dir: Path) -> dict[str, int]:
    path = report_dir / f"{CSV_PREFIX}_status.json"
    if not path.is_file():
        return {}
    data: dict[str, int] = json.loads(path.read_text())
    return {str(k): int(v) for k, v in sorted(data.items())}


def summarize(report_dir: Path, info: RunInfo) -> dict[str, Any]:
    """The summary dict (keys SUMMARY_KEYS first, then extras) from the CSVs in `report_dir`."""
    path = report_dir / f"{CSV_PREFIX}_stats.csv"
    row = aggregated_row(report_dir)
    requests = int(_num(row, "Request Count", path))
    failures = int(_num(row, "Failure Count", path))
    rps = _num(row, "Requests/s", path)
    # Locust's Requests/s divides by the time from the first to the last request: the real window.
    window_s = requests / rps if rps > 0 else info.run_time_s
    summary: dict[str, Any] = {
        "p50_ms": _num(row, "50%", path),
        "p95_ms": _num(row, "95%", path),
        "p99_ms": _num(row, "99%", path),
        "mean_ms": round(_num(row, "Average Response Time", path), 1),
        "images_per_s": round((requests - failures) / window_s, 3) if window_s > 0 else 0.0,
        "requests": requests,
        "failures": failures,
        "error_rate": round(failures / requests, 4) if requests else 0.0,
        "status_counts": status_counts(report_dir),
        "users": info.users,
        "run_time_s": info.run_time_s,
        "profile": info.profile,
        "model": info.model,
        "git_rev": info.git_rev,
        "host": info.host,
        "shape": info.shape,
        "max_ms": _num(row, "Max Response Time", path),
        "by_name": _by_name(report_dir),
    }
    return summary


def _by_name(report_dir: Path) -> list[dict[str, Any]]:
    path = report_dir / f"{CSV_PREFIX}_stats.csv"
    rows = [r for r in _read_rows(path) if r.get("Name") != "Aggregated"]
    return [
        {
            "method": r["Type"],
            "name": r["Name"],
            "requests": int(_num(r, "Request Count", path)),
            "failures": int(_num(r, "Failure Count", path)),
            "p50_ms": _num(r, "50%", path),
            "p95_ms": _num(r, "95%", path),
        }
        for r in rows
    ]


def failure_lines(report_dir: Path, limit: int = 5) -> list[str]:
    path = report_dir / f"{CSV_PREFIX}_failures.csv"
    if not path.is_file():
        return []
    rows = sorted(_read_rows(path), key=lambda r: -int(r.get("Occurrences") or 0))
    return [f"{r['Occurrences']}x {r['Method']} {r['Name']}: {r['Error'][:160]}" for r in rows[:limit]]


def _server_rows(s: dict[str, Any]) -> list[str]:
    """The server's side (loadtest/serverside.py), when the run had a metrics endpoint."""
    if "server_metrics" not in s:
        return []
    if s.get("server_mean_batch") is None:  # no endpoint, or no batch ran at all
        return [f"| server side | not measured: {s['server_metrics']} |"]

    def ms(key: str) -> str:
        return "-" if s.get(key) is None else f"{s[key]:g}"

    split = f"{ms('server_queue_wait_ms')} / {ms('server_generate_ms')} / {ms('server_encode_ms')} ms"
    return [
        f"| server: mean batch size | {s['server_mean_batch']} |",
        f"| server: queue wait / generate / encode (mean per request) | {split} |",
        f"| server: refused by admission (503) | {s['server_rejected']} |",
    ]


def markdown(summary: dict[str, Any], slo_lines: list[str], failures: list[str]) -> str:
    """summary.md: what a reviewer reads first, in CI's log or next to report.html."""
    s = summary
    statuses = ", ".join(f"{code}: {n}" for code, n in s["status_counts"].items()) or "n/a"
    lines = [
        f"# Load test: {s['profile']} ({s['model']}) at {s['git_rev']}",
        "",
        f"{s['users']} users, {s['shape']} shape, {s['run_time_s']:g} s against {s['host']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| p50 / p95 / p99 latency | {s['p50_ms']:g} / {s['p95_ms']:g} / {s['p99_ms']:g} ms |",
        f"| mean latency | {s['mean_ms']:g} ms |",
        f"| throughput | {s['images_per_s']:g} images/s |",
        f"| requests (failures) | {s['requests']} ({s['failures']}) |",
        f"| error rate | {s['error_rate']:.2%} |",
        f"| HTTP status counts | {statuses} |",
        *_server_rows(s),
        "",
        "| request | n | failures | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for r in s["by_name"]:
        counts = f"{r['requests']} | {r['failures']}"
        lines.append(f"| {r['method']} {r['name']} | {counts} | {r['p50_ms']:g} | {r['p95_ms']:g} |")
    lines += ["", "## SLO", ""] + [f"- {line}" for line in slo_lines]
    if failures:
        lines += ["", "## Top failures", ""] + [f"- {line}" for line in failures]
    lines += ["", "Files: report.html (Locust), latency.png, server.png, locust_*.csv, summary.json", ""]
    return "\n".join(lines)
