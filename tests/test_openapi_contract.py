"""The day-2 reliability pieces on their own: the published contract, the exposure probe, and the
arithmetic of the soak and update phases. The same code runs against a live keyed stack in
tests/test_reliability.py and at full size in `nox -s reliability`."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from dogbooth.commands.loadgen import Outcome
from dogbooth.commands.reliability import exposure, openapi, report, soak, updates
from dogbooth.platforms import local
from dogbooth.settings import profiles
from services.app import api
from services.schemas import Limits, openapi_for


def _spec() -> dict[str, Any]:
    api.openapi_schema = None
    return api.openapi()


def test_every_status_of_imagine_is_documented_with_its_error_schema() -> None:
    spec = _spec()
    for method in ("get", "post"):
        responses = spec["paths"]["/imagine"][method]["responses"]
        assert {"200", "400", "401", "404", "408", "422", "503"} <= set(responses)
        for status in ("400", "401", "404", "422", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, status)
        assert "Retry-After" in responses["503"]["headers"]
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_spec_states_the_deployments_limits_not_just_the_published_bounds() -> None:
    narrowed = openapi_for(_spec(), Limits(max_steps=2, max_side=64))
    body = narrowed["components"]["schemas"]["ImagineParams"]["properties"]
    assert body["steps"]["anyOf"][0]["maximum"] == 2 and body["img_size"]["anyOf"][0]["maximum"] == 64
    query = {p["name"]: p["schema"] for p in narrowed["paths"]["/imagine"]["get"]["parameters"]}
    assert query["width"]["anyOf"][0]["maximum"] == 64 and query["width"]["multipleOf"] == 8
    assert _spec()["components"]["schemas"]["ImagineParams"]["properties"]["steps"]["anyOf"][0]["maximum"] == 150


def test_schemathesis_report_counts_are_read_not_recounted() -> None:
    parsed = openapi.parse({
        "test_cases": {"generated": 612, "with_failures": 2, "unique_failures": 1, "errored": 0},
        "errors": [{"message": "x"}], "operations": {"tested": 5}, "running_time": 12.34, "exit_code": 1,
        "failures": [{"operation": "POST /imagine", "title": "Undocumented HTTP status code", "check": "c"}],
    })  # fmt: skip
    assert (parsed.cases, parsed.failures, parsed.errors, parsed.total_failures) == (612, 2, 1, 3)
    assert parsed.failed_checks[0]["operation"] == "POST /imagine"
    argv = openapi.command("http://h:1", Path("r.json"), Path("c.toml"), max_examples=7, seed=3, workers=2,
                           timeout_s=30)  # fmt: skip
    assert "--checks" in argv and argv[argv.index("--checks") + 1] == "all" and "Bearer" not in " ".join(argv)


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"metrics")

    def log_message(self, *_: object) -> None:
        pass


class _Quiet(HTTPServer):
    def handle_error(self, *_: object) -> None:
        pass  # the probe hangs up after the status line


@pytest.fixture
def open_server() -> Iterator[int]:
    """A real HTTP server on every interface that answers anyone: what an exposed exporter looks like."""
    server = _Quiet(("0.0.0.0", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_exposure_probe_tells_open_from_loopback(open_server: int) -> None:
    addresses = exposure.non_loopback_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback address to probe from")
    ipv4 = [a for a in addresses if ":" not in a] or addresses
    assert exposure.probe(ipv4[0], open_server) == "http 200"
    assert exposure.exposed("http 200") and exposure.exposed("accepts a connection, no HTTP answer")
    assert not exposure.exposed("http 401") and not exposure.exposed("unreachable")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert exposure.probe(ipv4[0], s.getsockname()[1]) == "unreachable"


def test_soak_windows_and_figures() -> None:
    assert soak.window_for(600) == 60 and soak.window_for(20) == 4
    result = soak.SoakResult(duration_s=20, rate_rps=1, window_s=4, rss_samples=[(1, 100.0), (4.5, 200.0), (20, 210.0)])
    outcomes = [Outcome(t, 0.1 if t < 10 else 0.15, 200) for t in range(20)] + [Outcome(19.5, 0.01, 503)]
    soak.summarize(result, outcomes)
    assert (result.rss_first_mb, result.rss_end_mb, result.rss_growth_pct) == (200.0, 210.0, 5.0)
    assert result.p99_drift == 1.5 and result.server_errors == 1


def test_an_update_counts_every_answer_not_from_a_deployed_revision() -> None:
    answers = [
        updates.Answer(0, 0.1, 200, "r0", "tiny"), updates.Answer(1, 0.1, 200, "r1", "/m"),
        updates.Answer(2, 0.1, 503), updates.Answer(3, 0.1, 200, "zz", "tiny"),
        updates.Answer(4, 35, None, error="timeout"),
    ]  # fmt: skip
    result = updates.summarize(updates.UpdateResult(rate_rps=1), answers, {"r0", "r1"}, {"tiny", "/m"})
    assert (result.sent, result.failed, result.unexpected, result.hung) == (5, 3, 1, 1)
    assert result.answered_by == {"r0 tiny": 1, "r1 /m": 1, "zz tiny": 1}


def test_day2_goals_hold_and_name_each_miss() -> None:
    figures: dict[str, dict[str, Any]] = {
        "exposure": {"exposed_unauthenticated_ports": 0, "bound_beyond_loopback": []},
        "openapi": {"cases": 600, "total_failures": 0, "images_served": 40},
        "updates": {"failed": 0, "updates": [{}, {}, {}]},
        "soak": {"duration_s": 600, "rss_growth_pct": 1.0, "p99_drift": 1.1, "server_errors": 0, "hung": 0},
    }
    checks = [g for g in report.goals() if g.phase in figures]
    assert report.failed(report.evaluate(report.summarize(figures), checks)) == []
    figures["soak"]["p99_drift"] = 1.3
    figures["openapi"]["total_failures"] = 2
    figures["exposure"]["exposed_unauthenticated_ports"] = None  # no address to probe from: not a pass
    missed = report.failed(report.evaluate(report.summarize(figures), checks))
    assert missed == ["openapi_failures == 0", "soak_p99_drift <= 1.25", "exposed_unauthenticated_ports == 0"]


def test_an_update_surges_one_replica_only_where_it_fits() -> None:
    base = profiles.load("local")
    surge = local.surge_profile(base)
    cpus = base.ray.num_cpus or os.cpu_count() or 1
    if cpus < 2:
        assert surge is None
    else:
        assert surge is not None and surge.serve.deployment.num_replicas == 2
    data = base.model_dump()
    data["ray"]["num_cpus"] = 1
    assert local.surge_profile(profiles.Profile.model_validate(data)) is None  # no room: Serve would wait forever
