"""`python -m dogbooth loadtest`: bring the target up if needed, run Locust, summarize, plot, gate.

Locust runs as a real `locust --headless` subprocess: its own gevent world stays out of ours, and
its report.html and CSVs are exactly what a user running Locust by hand would get.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from dogbooth.commands.loadgen import bearer
from dogbooth.core.errors import BringUpError, CommandFailed, DogboothError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import local
from dogbooth.settings.profiles import Profile
from loadtest import plot, serverside, slo, summary
from loadtest.mix import MIX_ENV, SHAPE_NAMES, Mix, mix_for

log = logging.getLogger("dogbooth.loadtest")
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STOP_TIMEOUT_S = 30.0
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class Options:
    users: int = 4
    spawn_rate: float = 4
    run_time: str = "30s"
    report_dir: Path = REPO_ROOT / "reports" / "loadtest"
    shape: str = "steady"
    slo_file: Path = slo.SLO_FILE
    slo_p95_ms: float | None = None
    slo_error_rate: float | None = None
    metrics_url: str | None = None  # Prometheus endpoint for the server_* keys; local profiles know their own


def parse_duration(text: str) -> float:
    """Seconds in Locust's `--run-time` syntax: `30`, `20s`, `2m`, `1h30m`."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    match = _DURATION.match(text)
    if not text or not match:
        raise DogboothError(f"--run-time {text!r}: use seconds or Locust's syntax, e.g. 30s, 2m, 1h30m")
    h, m, s = (int(g or 0) for g in match.groups())
    return float(h * 3600 + m * 60 + s)


def git_rev(root: Path = REPO_ROOT) -> str:
    """Short commit of the tested code, `-dirty` when the tree has changes; `unknown` outside git."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def base_url(url: str) -> str:
    """`http://h:p` from `http://h:p/`, `http://h:p/imagine` (what `up` prints) or `h:p`."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        url = f"http://{url}"
    return url.removesuffix("/imagine")


def probe(host: str) -> dict[str, Any] | None:
    """The target's /readyz answer, or None when it does not answer 200."""
    try:
        r = requests.get(f"{host}/readyz", headers=bearer(os.environ.get("DOGBOOTH_API_KEY")), timeout=5)
        return dict(r.json()) if r.ok else None
    except (requests.RequestException, ValueError):
        return None


@contextmanager
def target(profile: Profile | None, host: str | None) -> Iterator[str]:
    """Yield the base URL to test. A local profile that is not up is brought up, and down afterwards."""
    if host:
        yield base_url(host)
        return
    if profile is None:
        raise DogboothError("give --profile or --host")
    if profile.platform != "local":
        raise DogboothError(
            f"profile {profile.name} runs on {profile.platform}: pass --host with its endpoint "
            "(see docs/loadtest.md: kind via the ingress or a port-forward, EKS via the load balancer)"
        )

    state = local.LocalState.read(profile.name)
    if state is not None and local.is_alive(state) and probe(state.endpoint_base):
        log.info("profile %s is already up at %s; testing it as is", profile.name, state.endpoint_base)
        yield state.endpoint_base
        return
    log.info("profile %s is not up: bringing it up for the load test (and down afterwards)", profile.name)
    try:
        yield base_url(local.up(profile, source_root=REPO_ROOT))
    finally:
        local.down(profile.name)  # also after a failed bring-up: never strand a half-started head


def locust_argv(host: str, opts: Options, report_dir: Path) -> list[str]:
    run_s = parse_duration(opts.run_time)
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--users", str(opts.users), "--spawn-rate", str(opts.spawn_rate), "--run-time", f"{run_s:.0f}s",
        "--csv", str(report_dir / summary.CSV_PREFIX), "--csv-full-history",
        "--html", str(report_dir / "report.html"),
        "--only-summary", "--exit-code-on-error", "0",  # failures are judged by the SLO gate, not Locust
        # In-flight requests finish and count: cutting them off would hide the slowest ones from p95.
        "--stop-timeout", f"{STOP_TIMEOUT_S:.0f}s",
    ]  # fmt: skip


def run_locust(argv: list[str], env: dict[str, str], timeout_s: float) -> None:
    """Run Locust, echoing its output; a crash becomes CommandFailed with the output's tail."""
    log.info("$ %s", " ".join(argv))
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as e:
        raise DogboothError("locust is not installed: pip install -e '.[loadtest]'") from e
    deadline = time.monotonic() + timeout_s
    try:
        for line in proc.stdout or ():
            print(line, end="", flush=True)
            tail.append(line)
            if time.monotonic() > deadline:
                raise DogboothError(f"Locust still running {timeout_s:.0f}s after start; stopped it")
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if code != 0:
        raise CommandFailed(argv, code, "".join(tail))


def _mix(profile: Profile | None) -> Mix:
    if profile is None:
        return Mix()
    app = profile.serve.app
    d, lim = app.defaults, app.limits
    return mix_for(d.width, d.height, d.steps, lim.max_side, lim.max_steps)


def run(profile: Profile | None, host: str | None, opts: Options) -> dict[str, Any]:
    """The whole load test. Writes the report files; raises SLOViolation after writing them."""
    if opts.shape not in SHAPE_NAMES:
        raise DogboothError(f"--shape {opts.shape!r}: use one of {', '.join(SHAPE_NAMES)}")
    if opts.users < 1 or opts.spawn_rate <= 0:
        raise DogboothError("--users must be >= 1 and --spawn-rate > 0")
    run_s = parse_duration(opts.run_time)
    profile_name = profile.name if profile else "default"
    # A copy of a profile on other ports (tests, a second checkout) keeps its platform's budget.
    keys = [profile.name, profile.platform] if profile else []
    gate = slo.with_overrides(
        slo.load(keys, opts.slo_file), p95_ms=opts.slo_p95_ms, error_rate=opts.slo_error_rate
    )  # read before the run: a broken SLO file should not cost a load test
    report_dir = opts.report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in report_dir.glob(f"{summary.CSV_PREFIX}_*"):
        old.unlink()  # a stale status file or CSV must not leak into this run's summary
    with target(profile, host) as url:
        ready = probe(url)
        if ready is None:
            raise BringUpError(f"{url}/readyz does not answer 200: is the endpoint right and up?")
        env = dict(os.environ)
        env.update({
            MIX_ENV: _mix(profile).to_env(),
            "DOGBOOTH_LT_SHAPE": opts.shape,
            "DOGBOOTH_LT_STATUS_FILE": str(report_dir / f"{summary.CSV_PREFIX}_status.json"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        })  # fmt: skip
        metrics_url = serverside.metrics_url(profile, host, opts.metrics_url)
        before = serverside.scrape_before(metrics_url)
        print(f"load test: {opts.users} users ({opts.shape}) for {run_s:g}s against {url}", flush=True)
        run_locust(locust_argv(url, opts, report_dir), env, timeout_s=run_s + STOP_TIMEOUT_S + 90)
        ok = summary.status_counts(report_dir).get("200", 0)
        server = serverside.collect(metrics_url, before, ok)  # before `target` may take the stack down
    info = summary.RunInfo(
        users=opts.users, run_time_s=run_s, profile=profile_name, model=str(ready.get("model", "unknown")),
        git_rev=git_rev(), host=url, shape=opts.shape,
    )  # fmt: skip
    result = summary.summarize(report_dir, info)
    result.update(server)
    lines, violated = gate.check(result)
    result["slo"] = {
        "p95_ms": gate.p95_ms,
        "error_rate": gate.error_rate,
        "source": gate.source,
        "ok": not violated,
    }
    _write(report_dir, result, lines)
    if violated:
        raise slo.SLOViolation("SLO violated:\n" + "\n".join(violated) + f"\n(report: {report_dir}/summary.md)")
    return result


def _write(report_dir: Path, result: dict[str, Any], slo_lines: list[str]) -> None:
    title = f"dogbooth {result['profile']} ({result['model']}): {result['users']} users, {result['shape']}"
    plot.plot(report_dir, title)
    plot.plot_server(report_dir, result, title)
    (report_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    md = summary.markdown(result, slo_lines, summary.failure_lines(report_dir))
    (report_dir / "summary.md").write_text(md)
    print(md, flush=True)
