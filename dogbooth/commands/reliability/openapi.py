"""The OpenAPI contract: Schemathesis's own runner, every check, against the live service.

`fuzz.py` sends generated cases and counts 5xx; this phase asks the stricter question: does every
answer match the spec? It runs the `schemathesis run` command (the tool as its users run it) with
`--checks all`: status codes, content types, headers and bodies as documented, valid data
accepted, invalid data rejected, 405 with an `Allow` header for an undocumented method, and
missing auth refused. Its coverage phase sends boundary values and the undocumented methods; its
fuzzing phase `max_examples` Hypothesis cases per operation. The case and failure counts are the
tool's own, read from its JSON report, not recounted here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from dogbooth.commands.reliability import ReliabilityError
from dogbooth.core.tools import env_executable

log = logging.getLogger("dogbooth.commands.reliability")

KEY_ENV = "DOGBOOTH_RELIABILITY_KEY"  # the API key reaches Schemathesis through its config, not argv
# An explicit config: a schemathesis.toml in the working directory must not change what is tested.
CONFIG = '[headers]\nAuthorization = "Bearer ${' + KEY_ENV + '}"\n'


@dataclass
class OpenApiResult:
    cases: int = 0  # test cases Schemathesis generated and sent
    failures: int = 0  # cases with at least one failed check
    unique_failures: int = 0
    errors: int = 0  # cases or operations that could not run (each counts as a failure here)
    operations: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    # Images the replica made meanwhile (/readyz): proof the key got through. With a wrong key every
    # answer is a documented 401 and every check passes, which would prove nothing.
    images_served: int = 0
    failed_checks: list[dict[str, Any]] = field(default_factory=list)  # the first few: check, title, curl

    @property
    def total_failures(self) -> int:
        return self.failures + self.errors

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_failures": self.total_failures}


def _schemathesis() -> str:
    found = env_executable("schemathesis")
    if not found:
        raise ReliabilityError("the `schemathesis` command is missing; install the project's dev extras")
    return found


def command(base_url: str, report: Path, config: Path, *, max_examples: int, seed: int, workers: int,
            timeout_s: float) -> list[str]:  # fmt: skip
    """The `schemathesis run` command line (it carries no secret)."""
    return [
        _schemathesis(), "--config-file", str(config), "--no-color",
        "run", f"{base_url}/openapi.json", "--checks", "all", "--max-examples", str(max_examples),
        "--seed", str(seed), "--workers", str(workers), "--request-timeout", str(timeout_s),
        "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip


def parse(report: dict[str, Any]) -> OpenApiResult:
    """The figures of a Schemathesis JSON run report."""
    cases = report.get("test_cases", {})
    result = OpenApiResult(
        cases=int(cases.get("generated", 0)), failures=int(cases.get("with_failures", 0)),
        unique_failures=int(cases.get("unique_failures", 0)),
        errors=int(cases.get("errored", 0)) + len(report.get("errors", [])),
        operations=int(report.get("operations", {}).get("tested", 0)),
        seconds=round(float(report.get("running_time", 0.0)), 1), exit_code=report.get("exit_code"),
    )  # fmt: skip
    for failure in report.get("failures", [])[:10]:
        result.failed_checks.append({k: failure.get(k) for k in ("operation", "check", "title", "code", "curl")})
    return result


def _images(base_url: str) -> int:
    try:
        return int(requests.get(f"{base_url}/readyz", timeout=30).json()["batches"]["images"])
    except (requests.RequestException, ValueError, KeyError, TypeError) as e:
        raise ReliabilityError(f"cannot read the images served from {base_url}/readyz: {e}") from e


def run(
    base_url: str, key: str, workdir: Path, *, max_examples: int = 100, seed: int = 0, workers: int = 4,
    timeout_s: float = 60, budget_s: float = 1800,
) -> OpenApiResult:  # fmt: skip
    """Run Schemathesis against `base_url` with the API key; its JSON report lands in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config, report = workdir / "schemathesis.toml", workdir / "schemathesis-report.json"
    config.write_text(CONFIG)
    report.unlink(missing_ok=True)
    argv = command(base_url, report, config, max_examples=max_examples, seed=seed, workers=workers,
                   timeout_s=timeout_s)  # fmt: skip
    log.info("openapi: $ %s", " ".join(argv))
    env = {**os.environ, KEY_ENV: key}
    before = _images(base_url)
    try:
        done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired as e:
        raise ReliabilityError(f"schemathesis ran past {budget_s:.0f}s") from e
    (workdir / "schemathesis.log").write_text(done.stdout + done.stderr)
    if not report.exists():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise ReliabilityError(f"schemathesis exited {done.returncode} without a report:\n{tail}")
    result = parse(json.loads(report.read_text()))
    result.images_served = _images(base_url) - before
    log.info("openapi: %d cases, %d with failures, %d errors (exit %s), %d images served", result.cases,
             result.failures, result.errors, result.exit_code, result.images_served)  # fmt: skip
    return result
