"""Fuzzing `/imagine` from its own OpenAPI spec with Schemathesis: valid and invalid GETs and POSTs.

Cases are generated first (Hypothesis, seeded, so a run can be repeated), then sent by a few
threads. Any 5xx is a bug in the service: the report keeps a curl command that reproduces it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from dogbooth.commands.reliability import ReliabilityError

log = logging.getLogger("dogbooth.commands.reliability")

OPERATIONS = (("/imagine", "GET"), ("/imagine", "POST"))
MODES = ("positive", "negative")  # schema-conforming inputs, and inputs that break the schema


@dataclass
class FuzzResult:
    cases: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)  # "GET /imagine positive": cases sent
    server_errors: list[dict[str, Any]] = field(default_factory=list)  # status, case, curl to reproduce
    no_answer: int = 0  # timeouts and broken connections: as bad as a 5xx
    leaks: int = 0  # answers that contained the API key
    after_ok: bool = False  # a normal request succeeded after the fuzzing

    @property
    def server_error_count(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.isdigit() and int(status) >= 500)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "server_error_count": self.server_error_count}


def _draw(strategy: Any, count: int, seed: int) -> list[Any]:
    """`count` examples of `strategy`, reproducibly for a seed."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    found: list[Any] = []

    @fixed_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(case: Any) -> None:
        found.append(case)

    collect()
    return found


def generate(schema: Any, per_kind: int, seed: int) -> list[tuple[str, Any]]:
    """`per_kind` cases for each operation and mode: [(kind, schemathesis Case)]."""
    from schemathesis import GenerationMode

    cases: list[tuple[str, Any]] = []
    for path, method in OPERATIONS:
        for mode in MODES:
            strategy = schema[path][method].as_strategy(generation_mode=GenerationMode(mode))
            found: list[Any] = []
            # Hypothesis may stop short of max_examples (duplicates); a few more seeded rounds top it up.
            for round_ in range(5):
                found += _draw(strategy, per_kind - len(found), seed + round_)
                if len(found) >= per_kind:
                    break
            cases += [(f"{method} {path} {mode}", case) for case in found[:per_kind]]
    return cases


def load_schema(base_url: str, headers: dict[str, str]) -> Any:
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    try:
        # An explicit config: a schemathesis.toml in the working directory must not change what is tested.
        return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=SchemathesisConfig(), headers=headers)
    except Exception as e:  # schemathesis raises several unrelated types for an unreachable or bad spec
        raise ReliabilityError(f"cannot load the OpenAPI spec from {base_url}/openapi.json: {e}") from e


def _send(base_url: str, headers: dict[str, str], timeout_s: float, kind: str, case: Any) -> tuple[str, Any, Any]:
    with requests.Session() as http:
        try:
            return kind, case, case.call(base_url=base_url, session=http, headers=headers, timeout=timeout_s)
        except requests.RequestException as e:
            return kind, case, e


def run(
    base_url: str, *, cases: int = 1000, headers: dict[str, str] | None = None, secret: str | None = None,
    concurrency: int = 4, seed: int = 0, timeout_s: float = 60, budget_s: float = 1200,
) -> FuzzResult:  # fmt: skip
    """Send at least `cases` generated requests (stopping at `budget_s`); then one normal request."""
    headers = headers or {}
    schema = load_schema(base_url, headers)
    per_kind = -(-cases // (len(OPERATIONS) * len(MODES)))
    generated = generate(schema, per_kind, seed)
    log.info("fuzz: sending %d generated cases with %d threads", len(generated), concurrency)
    result, statuses, kinds = FuzzResult(), Counter[str](), Counter[str]()
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        pending = [pool.submit(_send, base_url, headers, timeout_s, kind, case) for kind, case in generated]
        for future in pending:
            if time.monotonic() - started > budget_s:
                log.warning("fuzz: time budget of %.0fs spent; stopping early", budget_s)
                pool.shutdown(cancel_futures=True)
                break
            kind, case, response = future.result()
            kinds[kind] += 1
            _record(result, statuses, kind, case, response, secret)
    result.cases, result.by_kind, result.statuses = (
        sum(kinds.values()),
        dict(kinds),
        dict(sorted(statuses.items())),
    )
    result.seconds = round(time.monotonic() - started, 1)
    result.after_ok = _normal_request_ok(base_url, headers, timeout_s)
    log.info("fuzz: %d cases in %.0fs: %s", result.cases, result.seconds, result.statuses)
    return result


def _record(
    result: FuzzResult, statuses: Counter[str], kind: str, case: Any, response: Any, secret: str | None
) -> None:
    if isinstance(response, Exception):
        statuses[type(response).__name__] += 1
        result.no_answer += 1
        return
    statuses[str(response.status_code)] += 1
    if secret and secret.encode() in response.content:
        result.leaks += 1
    if response.status_code >= 500 and len(result.server_errors) < 20:
        result.server_errors.append({
            "kind": kind, "status": response.status_code, "body": response.text[:300],
            "curl": case.as_curl_command(),
        })  # fmt: skip


def _normal_request_ok(base_url: str, headers: dict[str, str], timeout_s: float) -> bool:
    try:
        r = requests.get(f"{base_url}/imagine", params={"prompt": "a photo of a dog"}, headers=headers,
                         timeout=timeout_s)  # fmt: skip
    except requests.RequestException:
        return False
    return r.status_code == 200 and r.headers.get("content-type", "").startswith("image/")
