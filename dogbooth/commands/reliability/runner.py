"""`python -m dogbooth reliability`: a private copy of a local profile up, the checks run, the report written.

The stack runs on free ports under its own name (`reliability-<profile>`), so a stack you have up
is left alone, with a random API key in the Ray head's environment: every phase authenticates,
and the auth phase checks that nothing else gets in and that the key shows up in no log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbooth.commands.loadgen import GRACE_S, bearer, closed_loop, imagine_path, session
from dogbooth.commands.reliability import (
    ReliabilityError,
    auth,
    exposure,
    fuzz,
    openapi,
    overload,
    replica_kill,
    report,
    soak,
    train_interrupt,
    updates,
)
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
    soak_s: float = 600
    openapi_examples: int = 100  # Schemathesis fuzzing cases per operation; its coverage phase adds more
    min_openapi_cases: int = 500


@dataclass
class Run:
    """What the phases share: the stack, how to reach it, and the results so far."""

    profile: Profile
    state: LocalState
    key: str
    source_root: Path  # the stack serves a copy of services/: the update phase edits it
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
    return local.on_free_ports(profile, f"reliability-{profile.name}")


def fuzz_profile(profile: Profile) -> Profile:
    """`profile` with the cheap-request app settings of FUZZ_APP (same name and ports: a redeploy)."""
    data = profile.model_dump()
    data["serve"]["app"].update(FUZZ_APP)
    return Profile.model_validate(data)


@contextmanager
def stack(profile: Profile, key: str, source_root: Path) -> Iterator[LocalState]:
    """The profile up with `key` in the Ray head's environment, serving a copy of services/ from
    `source_root` (edits to the working tree during the run change nothing; the update phase edits
    the copy); always brought down (and the env restored)."""
    name = profile.serve.app.api_key_env
    previous = os.environ.get(name)
    os.environ[name] = key
    shutil.copytree(REPO_ROOT / "services", source_root / "services", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        local.up(profile, source_root=source_root)
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


def _capacity(run: Run, url: str, slots: int) -> float:
    """Requests/s the replicas serve: the overload phase's measurement, or a 10 s closed loop now."""
    details = run.details
    measured = details.get("overload", {}).get("capacity_rps") or details.get("capacity", {}).get("capacity_rps")
    if measured:
        return float(measured)

    async def closed() -> float:
        async with session(run.timeout_s + GRACE_S, run.headers) as client:
            outcomes, elapsed = await closed_loop(client, url, users=slots, duration_s=10)
        return sum(o.ok for o in outcomes) / elapsed

    capacity = asyncio.run(closed())
    if capacity <= 0:
        raise ReliabilityError("no request succeeded while measuring capacity")
    run.details.setdefault("capacity", {"capacity_rps": round(capacity, 2)})
    return capacity


def _contract_phases(run: Run, options: Options) -> None:
    """Fuzzing and the OpenAPI contract, both on the cheap-request settings of FUZZ_APP."""
    dep = run.profile.serve.deployment
    # Serve 503s simultaneous requests beyond max_queued_requests even when idle (they all pass
    # through the routing queue), and admission may refuse requests beyond always_admit, so the
    # fuzzers send no more at once than either: a 503 is a bug here.
    queue = dep.max_queued_requests if dep.max_queued_requests > 0 else 4
    threads = min(4, queue, run.profile.serve.app.admission.always_admit)
    log.info("deploying the fuzzing settings (serve.app %s)", FUZZ_APP)
    _redeploy(run, fuzz_profile(run.profile))
    if "fuzz" in options.phases:
        _phase(run.details, "fuzz", lambda: fuzz.run(
            run.base, cases=options.fuzz_cases, headers=run.headers, secret=run.key, seed=options.seed,
            concurrency=threads, timeout_s=run.timeout_s + GRACE_S).as_dict())  # fmt: skip
    if "openapi" in options.phases:
        _phase(run.details, "openapi", lambda: openapi.run(
            run.base, run.key, options.report_dir / "openapi", max_examples=options.openapi_examples,
            seed=options.seed, workers=threads, timeout_s=run.timeout_s + GRACE_S).as_dict())  # fmt: skip
    log.info("deploying profile %s as it is", run.profile.name)
    _redeploy(run, run.profile)


def _load_phases(run: Run, options: Options, url: str, slots: int) -> None:
    """Overload, replica kill, soak and updates: each at a rate set by the measured capacity."""
    if "overload" in options.phases:
        _phase(run.details, "overload", lambda: overload.run(
            url, run.headers, request_timeout_s=run.timeout_s, users=slots, duration_s=options.overload_s,
            factor=options.overload_factor).as_dict())  # fmt: skip
    if "kill" in options.phases:
        capacity = run.details.get("overload", {}).get("capacity_rps") or 4.0
        rate = round(max(0.5, min(4.0, capacity / 2)), 2)  # steady: half of capacity, well below overload
        _phase(run.details, "kill", lambda: replica_kill.run(
            run.state, url, run.headers, request_timeout_s=run.timeout_s, rate=rate).as_dict())  # fmt: skip
    if "soak" in options.phases:
        _phase(run.details, "soak", lambda: soak.run(
            run.state, url, run.headers, rate=round(0.7 * _capacity(run, url, slots), 2),
            duration_s=options.soak_s, request_timeout_s=run.timeout_s).as_dict())  # fmt: skip
    if "updates" in options.phases:
        _phase(run.details, "updates", lambda: updates.run(
            run.profile, run.source_root, url, run.headers, run.source_root,
            rate=round(0.5 * _capacity(run, url, slots), 2), request_timeout_s=run.timeout_s).as_dict())  # fmt: skip


def _serving_phases(run: Run, options: Options) -> None:
    dep = run.profile.serve.deployment
    # Clients that keep every replica's batch full: capacity is what the replicas serve, not the queue.
    slots = (dep.num_replicas or 1) * run.profile.serve.app.batching.max_batch_size
    url = run.base + DEFAULT_REQUEST
    if "exposure" in options.phases:  # first: every process of the stack is up and listening
        _phase(run.details, "exposure", lambda: exposure.run(run.state).as_dict())
    if "auth" in options.phases:
        _phase(run.details, "auth", lambda: auth.check_endpoints(run.base, run.key).as_dict())
    if set(options.phases) & {"fuzz", "openapi"}:
        _contract_phases(run, options)
    _load_phases(run, options, url, slots)
    if "auth" in options.phases:  # last: the logs now hold every phase's traffic
        roots = [Path(run.state.temp_dir), Path(run.state.log_path)]
        leaks = [f"log file {p}" for p in auth.files_containing(run.key, roots)]
        if run.details.get("fuzz", {}).get("leaks"):
            leaks.append(f"{run.details['fuzz']['leaks']} fuzzing answer(s)")
        run.details["auth"].setdefault("leaks", []).extend(leaks)
        run.details["auth"]["ok"] = bool(run.details["auth"].get("ok")) and not leaks


SERVING_PHASES = {"exposure", "auth", "fuzz", "openapi", "overload", "kill", "soak", "updates"}


def run(profile: Profile, options: Options) -> tuple[Path, list[str]]:
    """Run the chosen phases and write the report; returns (summary.json path, failed goal names)."""
    unknown = set(options.phases) - set(report.PHASES)
    if unknown:
        raise ReliabilityError(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(report.PHASES)}")
    target = reliability_profile(profile)
    load_at_start = round(os.getloadavg()[0], 2)  # the machine's other work colours every latency figure
    details: dict[str, dict[str, Any]] = {}
    if set(options.phases) & SERVING_PHASES:
        key = secrets.token_urlsafe(24)
        with (
            tempfile.TemporaryDirectory(prefix="dogbooth-reliability-src-") as source,
            stack(target, key, Path(source)) as state,
        ):
            _serving_phases(Run(target, state, key, Path(source), details), options)
    if "train" in options.phases:  # after the stack is down: training wants the CPU to itself
        with tempfile.TemporaryDirectory(prefix="dogbooth-reliability-train-") as workdir:
            _phase(details, "train", lambda: train_interrupt.run(Path(workdir)).as_dict())
    summary = report.summarize(details)
    met = report.evaluate(summary, report.goals(options.fuzz_cases, options.min_openapi_cases))
    meta = {"profile": profile.name, "git_rev": code_revision(), "cpu_count": os.cpu_count(),
            "load_average_1m_start": load_at_start, "phases": list(options.phases)}  # fmt: skip
    path = report.write(options.report_dir, summary, met, meta)
    return path, report.failed(met)
