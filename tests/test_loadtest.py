"""The load-test suite: mix, shapes, summary from CSVs, plot, SLO gate, and a real short Locust run."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dogbooth.core.errors import DogboothError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import local
from loadtest import plot, slo, summary
from loadtest.mix import PROMPTS, SHAPE_NAMES, Mix, mix_for, request_name
from loadtest.run import base_url, parse_duration

STATS_COLUMNS = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
]  # fmt: skip
PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
INFO = summary.RunInfo(users=4, run_time_s=20, profile="local", model="tiny", git_rev="abc1234", host="h")


def _stats_row(name: str, method: str, count: int, fails: int, rps: float, pcts: list[int]) -> dict[str, Any]:
    row: dict[str, Any] = {"Type": method, "Name": name, "Request Count": count, "Failure Count": fails}
    row.update({"Median Response Time": pcts[0], "Average Response Time": 123.456, "Min Response Time": 50})
    row.update({"Max Response Time": pcts[-1], "Average Content Size": 900, "Requests/s": rps, "Failures/s": 0})
    row.update(dict(zip(PERCENTILES, pcts, strict=True)))
    return row


def write_fixture(directory: Path, *, requests: int = 100, failures: int = 2, rps: float = 5.0) -> Path:
    """Locust-shaped CSVs: two request rows, Aggregated, a 3-row history, failures and status counts."""
    pcts = [100, 120, 130, 140, 180, 250, 300, 400, 500, 500, 500]
    with (directory / "locust_stats.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, STATS_COLUMNS)
        w.writeheader()
        w.writerow(_stats_row("/imagine [64px, 20 steps]", "GET", requests - 10, failures, rps, pcts))
        w.writerow(_stats_row("/imagine [96px, 10 steps]", "POST", 10, 0, rps / 10, pcts))
        w.writerow(_stats_row("Aggregated", "", requests, failures, rps, pcts))
    history_cols = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENTILES]
    with (directory / "locust_stats_history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(history_cols)
        w.writerow([1000, 0, "", "Aggregated", 0, 0] + ["N/A"] * len(PERCENTILES))
        for t, users in ((1001, 4), (1002, 4)):
            w.writerow([t, users, "", "Aggregated", rps, 0.5, *pcts])
    with (directory / "locust_failures.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Method", "Name", "Error", "Occurrences"])
        w.writerow(["GET", "/imagine [64px, 20 steps]", "HTTP 503: overloaded", failures])
    (directory / "locust_status.json").write_text(json.dumps({"200": requests - failures, "503": failures}))
    return directory


def test_summary_from_csv_fixture(tmp_path: Path) -> None:
    s = summary.summarize(write_fixture(tmp_path), INFO)
    assert list(s)[: len(summary.SUMMARY_KEYS)] == list(summary.SUMMARY_KEYS)
    assert (s["p50_ms"], s["p95_ms"], s["p99_ms"], s["mean_ms"]) == (100, 250, 400, 123.5)
    assert (s["requests"], s["failures"], s["error_rate"]) == (100, 2, 0.02)
    # 100 requests at 5 req/s is a 20 s window; 98 of them were images.
    assert s["images_per_s"] == pytest.approx(98 / 20)
    assert s["status_counts"] == {"200": 98, "503": 2}
    assert [r["name"] for r in s["by_name"]] == ["/imagine [64px, 20 steps]", "/imagine [96px, 10 steps]"]
    assert summary.failure_lines(tmp_path) == ["2x GET /imagine [64px, 20 steps]: HTTP 503: overloaded"]


def test_summary_with_no_requests_has_zero_rates(tmp_path: Path) -> None:
    s = summary.summarize(write_fixture(tmp_path, requests=0, failures=0, rps=0), INFO)
    assert (s["requests"], s["error_rate"], s["images_per_s"]) == (0, 0.0, 0.0)


def test_summary_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(summary.SummaryError, match="locust_stats.csv is missing"):
        summary.summarize(tmp_path, INFO)
    (tmp_path / "locust_stats.csv").write_text("Type,Name,Request Count\n,Aggregated,lots\n")
    with pytest.raises(summary.SummaryError, match="'Request Count' has 'lots'"):
        summary.summarize(tmp_path, INFO)


def test_markdown_and_plot(tmp_path: Path) -> None:
    s = summary.summarize(write_fixture(tmp_path), INFO)
    md = summary.markdown(s, ["ok: p95_ms 250 ms <= 5000 ms (x)"], summary.failure_lines(tmp_path))
    assert "| p50 / p95 / p99 latency | 100 / 250 / 400 ms |" in md
    assert "- ok: p95_ms 250 ms <= 5000 ms (x)" in md and "HTTP 503: overloaded" in md
    series = plot.history(tmp_path)
    assert series["t"] == [0.0, 1.0, 2.0] and series["p95"] == [None, 250.0, 250.0]
    assert series["ok"] == [0.0, 4.5, 4.5]
    png = plot.plot(tmp_path, "fixture")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.plot_server(tmp_path, s, "fixture") is None  # no server-side figures in this run
    server = {"server_mean_batch": 2.5, "server_queue_wait_ms": 40.0, "server_generate_ms": 60.0}
    s.update(server, server_encode_ms=1.5, server_rejected=3, server_metrics="http://m/metrics")
    md = summary.markdown(s, [], [])
    assert "| server: mean batch size | 2.5 |" in md and "| 40 / 60 / 1.5 ms |" in md
    assert "| server: refused by admission (503) | 3 |" in md
    assert plot.plot_server(tmp_path, s, "fixture") == tmp_path / "server.png"


def test_slo_file_profiles_fallbacks_and_overrides(tmp_path: Path) -> None:
    local = slo.load(["local"])
    assert local.p95_ms > 0 and 0 < local.error_rate < 1
    assert slo.load(["pytest-copy", "local"]) == local  # a copy of the local profile keeps its budget
    assert slo.load(["nothing-like-it"]).source.endswith(": default")
    strict = slo.with_overrides(local, p95_ms=1)
    lines, violated = strict.check({"p95_ms": 250.0, "error_rate": 0.0, "requests": 10})
    assert violated == [f"VIOLATED: p95_ms 250 ms <= 1 ms ({local.source} with --slo-p95-ms)"]
    assert lines[1].startswith("ok: error_rate 0 <= ")
    _, violated = local.check({"p95_ms": 0.0, "error_rate": 0.0, "requests": 0})
    assert violated and "no request completed" in violated[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local: {p95_ms: fast, error_rate: 0.01}", "local.p95_ms: expected a number"),
        ("local: {p95_ms: 5, error_rate: 0.01, p50: 1}", r"unknown key\(s\) p50"),
        ("other: {p95_ms: 5, error_rate: 0.01}", "no entry for local and no 'default' entry"),
        ("[1, 2]", "expected a mapping"),
    ],
)
def test_slo_file_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text(text)
    with pytest.raises(slo.SLOError, match=message) as info:
        slo.load(["local"], path)
    assert str(path) in str(info.value)


def test_mix_follows_the_profile_and_names_rows_by_shape() -> None:
    mix = mix_for(64, 64, 20, max_side=512, max_steps=50)
    assert (mix.sizes, mix.steps) == ([64, 96], [20, 10])
    rng = random.Random(3)
    drawn = [mix.request(rng) for _ in range(400)]
    assert {p["img_size"] for p in drawn} == {64, 96} and {p["steps"] for p in drawn} == {20, 10}
    assert 0.7 < sum(p["img_size"] == 64 for p in drawn) / 400 < 0.9
    assert all(p["prompt"] in PROMPTS and 0 <= p.get("seed", 0) < 2**32 for p in drawn)
    assert len({request_name(p) for p in drawn}) == 4  # never one row per prompt or seed
    assert mix_for(512, 512, 25, max_side=512, max_steps=50).sizes == [512]  # never beyond the limit
    assert Mix.from_env(mix.to_env()) == mix and Mix().request(rng).keys() <= {
        "prompt",
        "seed",
        "negative_prompt",
        "format",
    }


def test_duration_and_url_parsing() -> None:
    assert [parse_duration(t) for t in ("30", "20s", "2m", "1h30m")] == [30, 20, 120, 5400]
    with pytest.raises(DogboothError, match="--run-time 'soon'"):
        parse_duration("soon")
    assert base_url("127.0.0.1:8000/imagine") == "http://127.0.0.1:8000"
    assert base_url("https://dogbooth.example.com/") == "https://dogbooth.example.com"


def test_shapes_follow_the_common_options() -> None:
    """Ticks of each shape at chosen times (in a subprocess: importing Locust monkey-patches the process)."""
    script = textwrap.dedent(
        """
        import json, types
        from loadtest.shapes import SHAPES
        opts = types.SimpleNamespace(num_users=8, spawn_rate=2, run_time=100)
        runner = types.SimpleNamespace(environment=types.SimpleNamespace(parsed_options=opts))
        out = {}
        for name, cls in SHAPES.items():
            shape = cls(); shape.runner = runner
            ticks = []
            for t in (0, 30, 50, 80, 100):
                shape.get_run_time = lambda t=t: t
                ticks.append(shape.tick())
            out[name] = ticks
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    ticks = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(ticks) == list(SHAPE_NAMES)
    assert ticks["steady"] == [[8, 2], [8, 2], [8, 2], [8, 2], None]
    assert ticks["step"] == [[2, 2], [4, 2], [6, 2], [8, 2], None]
    assert ticks["spike"] == [[2, 8], [2, 8], [8, 8], [2, 8], None]


def _loadtest(stack: Any, report_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "dogbooth", "loadtest", "--profile", str(stack.profile_path)]
    argv += ["--users", "2", "--spawn-rate", "2", "--report-dir", str(report_dir), *extra]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)


def test_real_locust_run_writes_the_report(stack: Any, tmp_path: Path) -> None:
    """A few seconds of real Locust against the session's real stack (already up: left running)."""
    # The budget is lax on purpose: this checks the machinery, not this shared machine's speed.
    done = _loadtest(stack, tmp_path, "--run-time", "5s", "--slo-p95-ms", "60000", "--slo-error-rate", "0.5")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("report.html", "latency.png", "server.png", "summary.md", "summary.json", "locust_stats.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    s = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary.SUMMARY_KEYS) <= set(s)
    # The server's side, from the stack's own metrics endpoint scraped before and after.
    assert s["server_metrics"] == local.LocalState.read(stack.profile.name).metrics_url  # type: ignore[union-attr]
    assert (
        s["server_mean_batch"] >= 1
        and s["server_rejected"] >= 0
        and s["server_images"] >= s["requests"] - s["failures"]
    )
    assert all(s[k] > 0 for k in ("server_queue_wait_ms", "server_generate_ms", "server_encode_ms"))
    assert "| server: queue wait / generate / encode (mean per request) |" in done.stdout
    assert s["requests"] > 0 and s["model"] == "tiny" and s["users"] == 2 and s["profile"] == "pytest-stack"
    assert s["status_counts"].get("200", 0) == s["requests"] - s["failures"]
    assert "# Load test: pytest-stack (tiny)" in done.stdout  # summary.md is printed for CI's log
    assert "testing it as is" in done.stderr  # the session's stack was reused, not restarted


def test_impossible_slo_fails_naming_the_violation(stack: Any, tmp_path: Path) -> None:
    done = _loadtest(stack, tmp_path, "--run-time", "3s", "--slo-p95-ms", "1")
    assert done.returncode == 1
    assert "error: SLO violated:" in done.stderr
    assert "VIOLATED: p95_ms" in done.stderr and "<= 1 ms" in done.stderr and "--slo-p95-ms" in done.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["slo"]["ok"] is False
