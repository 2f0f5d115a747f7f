"""`python -m dogbooth reliability`: a private copy of a local profile up, the checks run, the report written.

The stack runs on free ports under its own name (`reliability-<profile>`), so a stack you have up
is left alone, with a random API key in the Ray head's environment: every phase authenticates,
and the auth phase checks that nothing else gets in and that the key shows up in no log.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbooth.commands.loadgen import GRACE_S, bearer, imagine_path
from dogbooth.commands.reliability import ReliabilityError, auth, fuzz, overload, replica_kill, report, train_interrupt
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.polling import poll
from dogbooth.platforms import local
from dogbooth.platforms.local import LocalState
from dogbooth.settings.profiles import Profile
from services.revision import code_revision

log = logging.getLogger("dogbooth.commands.reliability")
DEFAULT_REPORT_DIR = REPO_ROOT / "reports" / "reliability"
DEFAULT_REQUEST = imagine_path({"prompt": "a photo of a dog"})


@dataclass(frozen=True)
class Options:
    report_dir: Path = DEFAULT_REPORT_DIR
    fuzz_cases: int = 1000
    overload_s: float = 60
    overload_factor: float = 3.0
    phases: tuple[str, ...] = report.PHASES
    seed: int = 0


@dataclass
class Run:
    """What the phases share: the stack, how to reach it, and the results so far."""

    profile: Profile
    state: LocalState
    key: str
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.state.endpoint_base

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)

    @property
    def timeout_s(self) -> float:
        return self.profile.serve.request_timeout_s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# serve.app overrides of the fuzzing deployment: every request the fuzzer can make that passes
# validation costs at most a 2-step 64 px image. Without them a fuzzed 512 px, 50-step request takes
# minutes on a CPU, and 1000 cases would take hours. Limits are checked by the same code either way.
FUZZ_APP: dict[str, Any] = {
    "defaults": {"steps": 2, "guidance": 7.5, "width": 64, "height": 64},
    "limits": {"max_steps": 2, "max_side": 64},
}


def reliability_profile(profile: Profile) -> Profile:
    """`profile` renamed and on free ports, otherwise as it is: the queue bounds and timeouts under test."""
    if profile.platform != "local":
        raise ReliabilityError(f"reliability runs on a local profile; {profile.name} is platform {profile.platform}")
    data = profile.model_dump()
    data["name"] = f"reliability-{profile.name}"
    data["ray"].update(gcs_port=_free_port(), dashboard_port=_free_port())
    data["serve"]["http_port"] = _free_port()
    return Profile.model_validate(data)


def fuzz_profile(profile: Profile) -> Profile:
    """`profile` with the cheap-request app settings of FUZZ_APP (same name and ports: a redeploy)."""
    data = profile.model_dump()
    data["serve"]["app"].update(FUZZ_APP)
    return Profile.model_validate(data)


@contextmanager
def stack(profile: Profile, key: str) -> Iterator[LocalState]:
    """The profile up with `key` in the Ray head's environment; always brought down (and the env restored)."""
    name = profile.serve.app.api_key_env
    previous = os.environ.get(name)
    os.environ[name] = key
    try:
        local.up(profile, source_root=REPO_ROOT)
        state = LocalState.read(profile.name)
        if state is None:
            raise ReliabilityError(f"no state file for {profile.name} after bring-up")
        yield state
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
        local.down(profile.name)


def _redeploy(run: Run, profile: Profile, *, timeout_s: float = 300) -> None:
    """Deploy `profile` on the running head and wait until new replicas (not the old ones) serve it."""
    old = set(replica_kill.replica_pids(run.state))
    local.deploy(run.state, profile, timeout_s=timeout_s)

    def replaced() -> bool | None:
        pids = set(replica_kill.replica_pids(run.state))
        return True if pids and not pids & old else None

    poll(f"the redeploy to replace replicas {sorted(old)}", replaced, timeout_s=timeout_s, interval_s=0.5,
         error=ReliabilityError)  # fmt: skip
    run.state.client().wait_ready(run.base, None, timeout_s=timeout_s)


def _phase(details: dict[str, dict[str, Any]], name: str, body: Callable[[], dict[str, Any]]) -> None:
    """Run one phase; a phase that cannot run is recorded as an error (its goals then fail), not fatal."""
    started = time.monotonic()
    log.info("=== %s ===", name)
    try:
        details[name] = body()
    except ReliabilityError as e:
        log.error("%s could not run: %s", name, e)
        details[name] = {"error": str(e)}
    details[name]["phase_seconds"] = round(time.monotonic() - started, 1)


def _serving_phases(run: Run, options: Options) -> None:
    dep = run.profile.serve.deployment
    # Clients that keep every replica's batch full: capacity is what the replicas serve, not the queue.
    slots = (dep.num_replicas or 1) * run.profile.serve.app.batching.max_batch_size
    url = run.base + DEFAULT_REQUEST
    if "auth" in options.phases:
        _phase(run.details, "auth", lambda: auth.check_endpoints(run.base, run.key).as_dict())
    if "fuzz" in options.phases:
        # Serve 503s simultaneous requests beyond max_queued_requests even when idle (they all pass
        # through the routing queue), and admission may refuse requests beyond always_admit, so the
        # fuzzer sends no more at once than either: a 503 is a bug here.
        queue = dep.max_queued_requests if dep.max_queued_requests > 0 else 4
        threads = min(4, queue, run.profile.serve.app.admission.always_admit)
        log.info("deploying the fuzzing settings (serve.app %s)", FUZZ_APP)
        _redeploy(run, fuzz_profile(run.profile))
        _phase(run.details, "fuzz", lambda: fuzz.run(
            run.base, cases=options.fuzz_cases, headers=run.headers, secret=run.key, seed=options.seed,
            concurrency=threads, timeout_s=run.timeout_s + GRACE_S).as_dict())  # fmt: skip
        log.info("deploying profile %s as it is", run.profile.name)
        _redeploy(run, run.profile)
    if "overload" in options.phases:
        _phase(run.details, "overload", lambda: overload.run(
            url, run.headers, request_timeout_s=run.timeout_s, users=slots, duration_s=options.overload_s,
            factor=options.overload_factor).as_dict())  # fmt: skip
    if "kill" in options.phases:
        capacity = run.details.get("overload", {}).get("capacity_rps") or 4.0
        rate = round(max(0.5, min(4.0, capacity / 2)), 2)  # steady: half of capacity, well below overload
        _phase(run.details, "kill", lambda: replica_kill.run(
            run.state, url, run.headers, request_timeout_s=run.timeout_s, rate=rate).as_dict())  # fmt: skip
    if "auth" in options.phases:  # last: the logs now hold every phase's traffic
        roots = [Path(run.state.temp_dir), Path(run.state.log_path)]
        leaks = [f"log file {p}" for p in auth.files_containing(run.key, roots)]
        if run.details.get("fuzz", {}).get("leaks"):
            leaks.append(f"{run.details['fuzz']['leaks']} fuzzing answer(s)")
        run.details["auth"].setdefault("leaks", []).extend(leaks)
        run.details["auth"]["ok"] = bool(run.details["auth"].get("ok")) and not leaks


def run(profile: Profile, options: Options) -> tuple[Path, list[str]]:
    """Run the chosen phases and write the report; returns (summary.json path, failed goal names)."""
    unknown = set(options.phases) - set(report.PHASES)
    if unknown:
        raise ReliabilityError(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(report.PHASES)}")
    target = reliability_profile(profile)
    load_at_start = round(os.getloadavg()[0], 2)  # the machine's other work colours every latency figure
    details: dict[str, dict[str, Any]] = {}
    if set(options.phases) & {"auth", "fuzz", "overload", "kill"}:
        key = secrets.token_urlsafe(24)
        with stack(target, key) as state:
            serving = Run(target, state, key, details)
            _serving_phases(serving, options)
    if "train" in options.phases:  # after the stack is down: training wants the CPU to itself
        with tempfile.TemporaryDirectory(prefix="dogbooth-reliability-train-") as workdir:
            _phase(details, "train", lambda: train_interrupt.run(Path(workdir)).as_dict())
    summary = report.summarize(details)
    met = report.evaluate(summary, report.goals(options.fuzz_cases))
    meta = {"profile": profile.name, "git_rev": code_revision(), "cpu_count": os.cpu_count(),
            "load_average_1m_start": load_at_start, "phases": list(options.phases)}  # fmt: skip
    path = report.write(options.report_dir, summary, met, meta)
    return path, report.failed(met)
