"""latency.png: latency percentiles and throughput over time, from Locust's stats history."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from loadtest.summary import CSV_PREFIX, SummaryError


def _value(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def history(report_dir: Path) -> dict[str, list[float | None]]:
    """Per-second series of the Aggregated row: t (s since start), users, p50/p95/p99 (ms), ok/s, fail/s."""
    path = report_dir / f"{CSV_PREFIX}_stats_history.csv"
    if not path.is_file():
        raise SummaryError(f"{path} is missing: Locust writes it with --csv")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    series: dict[str, list[float | None]] = {k: [] for k in ("t", "users", "p50", "p95", "p99", "ok", "fail")}
    if not rows:
        return series
    start = float(rows[0]["Timestamp"])
    for r in rows:
        rps, fps = _value(r.get("Requests/s")) or 0.0, _value(r.get("Failures/s")) or 0.0
        series["t"].append(float(r["Timestamp"]) - start)
        series["users"].append(_value(r.get("User Count")))
        for p in ("50", "95", "99"):
            series[f"p{p}"].append(_value(r.get(f"{p}%")))
        series["ok"].append(max(0.0, rps - fps))
        series["fail"].append(fps)
    return series


def _floats(values: list[float | None]) -> list[float]:
    """NaN for a gap (no request in the window), which matplotlib leaves unplotted."""
    return [v if v is not None else float("nan") for v in values]


def plot(report_dir: Path, title: str, out: Path | None = None) -> Path:
    """Write `latency.png` (or `out`): percentiles on the left axis, images/s and users on the right."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt

    s = history(report_dir)
    out = out or report_dir / "latency.png"
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    styles: dict[str, dict[str, Any]] = {"p50": {"lw": 2}, "p95": {"lw": 1.5}, "p99": {"lw": 1, "ls": "--"}}
    for key, style in styles.items():
        ax.plot(_floats(s["t"]), _floats(s[key]), label=f"{key} latency", **style)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms, 10 s window)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(_floats(s["t"]), _floats(s["ok"]), color="tab:green", alpha=0.7, label="images/s")
    if any(s["fail"]):
        right.plot(_floats(s["t"]), _floats(s["fail"]), color="tab:red", alpha=0.7, label="failures/s")
    right.step(_floats(s["t"]), _floats(s["users"]), where="post", color="grey", alpha=0.5, ls=":", label="users")
    right.set_ylabel("images/s, users")
    right.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize="small", ncol=3)
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out


SPLIT = (  # (summary key, label, colour): where a request's mean latency went
    ("server_queue_wait_ms", "queue wait (replica)", "tab:orange"),
    ("server_generate_ms", "generate (its batch's pipeline call)", "tab:blue"),
    ("server_encode_ms", "encode", "tab:purple"),
)


def plot_server(report_dir: Path, summary: dict[str, Any], title: str, out: Path | None = None) -> Path | None:
    """Write `server.png`: the client's mean latency split into the replica's queue wait, generate and
    encode (means per request, from the server's metrics) and the rest (HTTP, proxy, routing).
    None when the run has no server-side figures."""
    if any(summary.get(key) is None for key, _, _ in SPLIT):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = out or report_dir / "server.png"
    fig, ax = plt.subplots(figsize=(9, 2.4), dpi=100)
    left = 0.0
    for key, label, colour in SPLIT:
        ax.barh(["mean request"], [summary[key]], left=left, color=colour, label=f"{label}: {summary[key]:g} ms")
        left += summary[key]
    rest = max(0.0, float(summary.get("mean_ms") or 0.0) - left)
    ax.barh(["mean request"], [rest], left=left, color="lightgrey", label=f"rest (HTTP, proxy, routing): {rest:.0f} ms")
    ax.set_xlabel("ms (client mean latency, split by the server's metrics)")
    ax.set_title(
        f"{title}\nmean batch {summary.get('server_mean_batch')}, refused by admission "
        f"{summary.get('server_rejected')}",
        fontsize="medium",
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize="small")
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, bbox_inches="tight")  # the legend sits below the axes
    plt.close(fig)
    tmp.replace(out)
    return out
