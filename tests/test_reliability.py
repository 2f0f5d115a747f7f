"""Reliability checks, small: the goal logic on its own, then fuzz, auth and overload on a real keyed stack.

The full-size runs (1000 fuzz cases, 60 s of overload, a replica kill, a training kill) are
`nox -s reliability`; here each check runs briefly and asserts behaviour, not speed.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Stack, start_stack

from dogbooth.commands.loadgen import Outcome, percentile, status_counts
from dogbooth.commands.reliability import (
    ReliabilityError,
    auth,
    exposure,
    fuzz,
    openapi,
    overload,
    replica_kill,
    report,
    runner,
    soak,
    train_interrupt,
)
from dogbooth.platforms import local
from dogbooth.settings import profiles

KEY_ENV = "DOGBOOTH_API_KEY"


# ---- pure logic ------------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(range(1, 101), 99) == 99
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_outcomes_tell_hangs_from_errors() -> None:
    hung, broken, ok = (
        Outcome(0, 35, None, "timeout"),
        Outcome(0, 0.1, None, "ClientOSError"),
        Outcome(1, 0.2, 200),
    )
    assert hung.hung and not broken.hung and ok.ok and ok.done_s == pytest.approx(1.2)
    assert status_counts([hung, broken, ok, ok]) == {"200": 2, "ClientOSError": 1, "timeout": 1}


def test_recovery_counts_only_requests_sent_after_the_kill() -> None:
    outcomes = [
        Outcome(0.0, 9.0, 200),
        Outcome(2.0, 0.5, 500),
        Outcome(3.0, 4.0, 503),
        Outcome(6.0, 1.0, 200),
    ]
    result = replica_kill._result(outcomes, pid=1, new_pids=[2], rate=1.0, kill_s=1.5)
    assert result.recovery_s == pytest.approx(5.5)  # the 200 that started before the kill does not count
    assert result.failed == 2 and result.hung == 0


def _summary(**changes: object) -> dict[str, Any]:
    details: dict[str, dict[str, Any]] = {
        "fuzz": {"cases": 1000, "server_error_count": 0, "no_answer": 0, "after_ok": True, "leaks": 0},
        "overload": {"rejected": 50, "reject_p99_ms": 12.0, "accepted_p99_ms": 290.0,
                     "unloaded_p50_ms": 100.0, "hung": 0, "statuses": {"200": 20, "503": 50},
                     "recovered": True},
        "kill": {"recovery_s": 8.0, "failed": 3, "hung": 0},
        "train": {"ok": True}, "auth": {"ok": True},
    }  # fmt: skip
    for dotted, value in changes.items():
        phase, key = dotted.split("__")
        details[phase][key] = value
    return report.summarize(details)


def test_goals_met_and_each_failure_named() -> None:
    checks = report.goals()
    assert report.failed(report.evaluate(_summary(), checks)) == []
    broken = _summary(overload__accepted_p99_ms=301.0, kill__recovery_s=float("inf"), fuzz__server_error_count=1)
    assert broken["kill_recovery_s"] is None  # JSON cannot carry infinity
    assert report.failed(report.evaluate(broken, checks)) == [
        "fuzz_5xx == 0", "overload_accepted_p99_ms <= 3 * unloaded_p50_ms", "kill_recovery_s < 30",
    ]  # fmt: skip


def test_phases_not_run_are_reported_not_failed(tmp_path: Path) -> None:
    summary = report.summarize({"auth": {"ok": True}})
    met = report.evaluate(summary, report.goals())
    assert met["auth_ok"] is True and met["kill_recovery_s < 30"] is None and report.failed(met) == []
    path = report.write(tmp_path, summary, met, {"profile": "local"})
    assert set(report.KEYS) <= set(__import__("json").loads(path.read_text()))
    assert "not run" in (tmp_path / "summary.md").read_text()


def test_secret_found_across_read_chunks(tmp_path: Path) -> None:
    secret = "s3cr3t-key"
    (tmp_path / "a.log").write_bytes(b"x" * ((1 << 20) - 4) + secret.encode() + b"\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.log").write_text("nothing here")
    assert auth.files_containing(secret, [tmp_path]) == [str(tmp_path / "a.log")]


def test_reliability_profile_is_private_and_cheap() -> None:
    local_profile = profiles.load("local")
    target = runner.reliability_profile(local_profile)
    assert target.name == "reliability-local"
    assert target.serve.http_port != local_profile.serve.http_port
    assert target.serve.deployment == local_profile.serve.deployment  # the queue bounds under test are the profile's
    assert target.serve.app == local_profile.serve.app
    assert runner.fuzz_profile(target).serve.app.limits.max_steps == 2
    with pytest.raises(ReliabilityError, match="local profile"):
        runner.reliability_profile(profiles.load("kind-cpu"))


def test_training_config_keeps_every_checkpoint(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(train_interrupt.write_config(tmp_path, steps=24, every=6).read_text())
    assert data["checkpoint"] == {"every_n_steps": 6, "keep_last": 5}
    assert data["train"]["max_train_steps"] == 24


def test_fuzz_cases_cover_get_and_post_valid_and_invalid() -> None:
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    from services.app import api

    schema = schemathesis.openapi.from_dict(api.openapi(), config=SchemathesisConfig())
    cases = fuzz.generate(schema, 25, seed=0)
    kinds = {kind for kind, _ in cases}
    assert len(cases) == 100 and kinds == {f"{m} /imagine {g}" for m in ("GET", "POST") for g in fuzz.MODES}
    assert [c.query for _, c in cases] == [c.query for _, c in fuzz.generate(schema, 25, seed=0)]  # repeatable


# ---- on a real stack with an API key ------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A private stack whose Ray head has an API key, on the fuzzing settings so every request is cheap."""
    key = secrets.token_urlsafe(24)
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = key
    try:
        s = start_stack(tmp_path_factory.mktemp("keyed"), "pytest-keyed", **runner.FUZZ_APP)
    finally:
        os.environ.pop(KEY_ENV) if previous is None else os.environ.__setitem__(KEY_ENV, previous)
    try:
        yield s, key
    finally:
        local.down(s.profile.name)


def test_fuzzing_finds_no_server_error(keyed: tuple[Stack, str]) -> None:
    s, key = keyed
    result = fuzz.run(s.base_url, cases=120, headers={"X-API-Key": key}, secret=key, concurrency=4, seed=1)
    assert result.cases >= 120 and set(result.by_kind) == {
        f"{m} /imagine {mode}" for m in ("GET", "POST") for mode in ("positive", "negative")
    }
    assert result.server_errors == [] and result.server_error_count == 0, result.server_errors
    assert result.no_answer == 0 and result.leaks == 0
    assert result.after_ok
    assert "422" in result.statuses  # negative cases were refused at the boundary


def test_openapi_contract_holds_with_every_check(keyed: tuple[Stack, str], tmp_path: Path) -> None:
    s, key = keyed
    result = openapi.run(s.base_url, key, tmp_path, max_examples=5, workers=2)
    assert result.operations == 5 and result.cases >= 100  # the coverage phase alone sends ~300
    assert result.total_failures == 0, result.failed_checks
    assert result.images_served > 0  # the key got through: not a run of documented 401s


def test_unsupported_method_and_unparseable_body_answer_as_documented(keyed: tuple[Stack, str]) -> None:
    s, key = keyed
    r = requests.put(s.endpoint, timeout=30)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers
    assert "GET, POST" in r.json()["error"]
    r = requests.post(s.endpoint, data=b'{"prompt": "\xff"}', timeout=30,
                      headers={"content-type": "application/json", "X-API-Key": key})  # fmt: skip
    assert r.status_code == 400 and list(r.json()) == ["error"], r.text
    spec = requests.get(f"{s.base_url}/openapi.json", timeout=30).json()
    assert "400" in spec["paths"]["/imagine"]["post"]["responses"]
    steps = spec["components"]["schemas"]["ImagineParams"]["properties"]["steps"]["anyOf"][0]
    assert steps["maximum"] == runner.FUZZ_APP["limits"]["max_steps"]  # this deployment's limit, not 150


def test_the_stack_listens_on_loopback_only(keyed: tuple[Stack, str]) -> None:
    state = local.LocalState.read(keyed[0].profile.name)
    assert state is not None
    result = exposure.run(state)
    assert result.listeners >= 5  # GCS, raylet, dashboard, agents, proxy, replica...
    # Serve's replica binds its inter-deployment gRPC server to [::] in code (docs/reliability.md);
    # everything else is on loopback, and that one refuses callers without the token.
    beyond = {x["process"].split()[0] for x in result.bound_beyond_loopback}
    assert beyond <= {replica_kill.REPLICA_TITLE}, result.bound_beyond_loopback
    assert result.exposed == [], result.exposed
    assert all(p["answer"] == exposure.GRPC_REFUSED for p in result.ports), result.ports


def test_a_short_soak_serves_without_errors(keyed: tuple[Stack, str]) -> None:
    s, key = keyed
    state = local.LocalState.read(s.profile.name)
    assert state is not None
    result = soak.run(state, f"{s.endpoint}?prompt=a+dog", {"X-API-Key": key}, rate=2, duration_s=10,
                      request_timeout_s=s.profile.serve.request_timeout_s)  # fmt: skip
    assert result.sent >= 15 and result.server_errors == 0 and result.hung == 0, result.statuses
    assert result.rss_first_mb and result.rss_end_mb and result.p99_drift is not None


def test_overload_sheds_with_503_and_recovers(keyed: tuple[Stack, str]) -> None:
    s, key = keyed
    result = overload.run(
        f"{s.endpoint}?prompt=a+dog", {"Authorization": f"Bearer {key}"},
        request_timeout_s=s.profile.serve.request_timeout_s, users=s.profile.serve.app.batching.max_batch_size,
        duration_s=6, capacity_s=4, unloaded_n=5,
    )  # fmt: skip
    assert result.rejected > 0, result  # 3x capacity must be refused in part
    assert result.hung == 0
    assert set(result.statuses) <= {"200", "503"}, result.statuses
    assert result.recovered


def test_api_key_required_and_never_leaked(keyed: tuple[Stack, str]) -> None:
    s, key = keyed
    state = local.LocalState.read(s.profile.name)
    assert state is not None
    result = auth.check(s.base_url, key, [Path(state.temp_dir), Path(state.log_path)])
    assert [c for c in result.checks if not c["ok"]] == []
    assert result.leaks == []
    assert result.ok


def test_generation_stops_when_every_caller_is_gone() -> None:
    """A timed-out request must not keep the replica busy: its pipeline call stops at the next step."""
    from services.pipeline import Abandoned, Generator, Job
    from services.schemas import AppArgs

    generator = Generator(AppArgs(model="tiny", threads=1))
    gone, waiting = Job("a dog", "", 3, 7.5, 64, 64, 1, "png"), Job("a cat", "", 3, 7.5, 64, 64, 2, "png")
    gone.abandoned.set()
    assert isinstance(generator.generate_many([gone])[0], Abandoned)
    both = generator.generate_many([gone, waiting])  # one caller still waits: the shared call goes on
    assert isinstance(both[0], bytes) and isinstance(both[1], bytes)
