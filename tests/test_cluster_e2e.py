"""End to end on kind, the steps of .github/workflows/kind-e2e.yml on any machine with the tools:
`up` kind-cpu, GET /imagine through the ingress until it answers 200 (bounded), a short Locust run
against that endpoint, then `down`.

Needs docker, kind, ctlptl, kubectl and helm (and network for the first image pulls); it skips,
naming what is missing, anywhere else. Run it with `nox -s tests -- -m cluster`. The nox sessions
`up`, `loadtest` and `down` are thin calls into `python -m dogbooth <command>` (noxfile.py), and
nox itself is not installed in the env the tests run in, so the steps call that directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import find_problems
from dogbooth.platforms.kubesteps import required_tools

pytestmark = pytest.mark.cluster

PROFILE = "kind-cpu"
UP_TIMEOUT_S = 60 * 60  # the first run pulls the Ray image and builds ours
DOWN_TIMEOUT_S = 15 * 60
READY_TRIES, READY_PAUSE_S, READY_TRY_TIMEOUT_S = 30, 10, 20  # as the workflow's wait step
LOAD_TEST_RUN_TIME = "20s"  # shorter than the workflow's 60 s: a smoke run of the same command


def _dogbooth(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dogbooth", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def kind_cpu_endpoint() -> Iterator[str]:
    problems = find_problems(required_tools("kind", "up"))
    if problems:
        pytest.skip("kind end-to-end needs the cluster tools: " + "; ".join(p.split(";")[0] for p in problems))
    try:
        up = _dogbooth("up", "--profile", PROFILE, timeout_s=UP_TIMEOUT_S)
        assert up.returncode == 0, f"up failed:\n{up.stdout[-3000:]}\n{up.stderr[-6000:]}"
        last = up.stdout.strip().splitlines()[-1]  # the contract: the endpoint is the last line
        assert last.startswith("endpoint: "), f"last line of up is not the endpoint:\n{up.stdout[-3000:]}"
        yield last.removeprefix("endpoint: ").strip()
    finally:
        down = _dogbooth("down", "--profile", PROFILE, timeout_s=DOWN_TIMEOUT_S)
        assert down.returncode == 0, f"down failed:\n{down.stderr[-4000:]}"


def test_imagine_answers_200_through_the_ingress(kind_cpu_endpoint: str) -> None:
    assert kind_cpu_endpoint.startswith("http://127.0.0.1:8080/dogbooth/serve/")
    params: dict[str, str | int] = {"prompt": "a photo of sks dog", "steps": 2, "seed": 7}
    seen = []
    for _ in range(READY_TRIES):
        try:
            response = httpx.get(kind_cpu_endpoint, params=params, timeout=READY_TRY_TIMEOUT_S)
        except httpx.HTTPError as e:
            seen.append(type(e).__name__)
        else:
            if response.status_code == 200:
                assert response.headers["content-type"] == "image/png"
                assert response.content.startswith(b"\x89PNG")
                return
            seen.append(str(response.status_code))
        time.sleep(READY_PAUSE_S)
    pytest.fail(f"no 200 from {kind_cpu_endpoint} in {READY_TRIES} tries: {seen}")


def test_empty_prompt_is_a_4xx_through_the_ingress(kind_cpu_endpoint: str) -> None:
    response = httpx.get(kind_cpu_endpoint, params={"prompt": " "}, timeout=60)
    assert 400 <= response.status_code < 500


def test_a_short_load_test_through_the_ingress(kind_cpu_endpoint: str, tmp_path: Path) -> None:
    base = kind_cpu_endpoint.removesuffix("/imagine")  # --host takes the base URL
    report = tmp_path / "loadtest-kind"
    run = _dogbooth(
        "loadtest", "--profile", PROFILE, "--host", base, "--users", "4", "--spawn-rate", "4",
        "--run-time", LOAD_TEST_RUN_TIME, "--report-dir", str(report), timeout_s=10 * 60,
    )  # fmt: skip
    assert run.returncode == 0, f"loadtest failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["host"] == base
    assert summary["requests"] > 0 and summary["slo"]["ok"], summary
    assert (report / "report.html").is_file()
