"""End to end on kind: `nox -s up -- --profile kind-cpu`, GET /imagine through the ingress, `nox -s down`.

Needs a workstation with docker, kind, ctlptl, kubectl and helm (and network for the first image
pulls); it skips, naming what is missing, anywhere else. Run it with `nox -s tests -- -m cluster`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import find_problems
from dogbooth.platforms.kubesteps import required_tools

pytestmark = pytest.mark.cluster

UP_TIMEOUT_S = 60 * 60  # the first run pulls the Ray image and builds ours


def _nox(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nox", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def kind_cpu_endpoint() -> Iterator[str]:
    problems = find_problems(required_tools("kind", "up"))
    if problems:
        pytest.skip("kind end-to-end needs the cluster tools: " + "; ".join(p.split(";")[0] for p in problems))
    if importlib.util.find_spec("nox") is None:
        pytest.skip("nox is not installed in this environment")
    try:
        up = _nox("-s", "up", "--", "--profile", "kind-cpu", timeout_s=UP_TIMEOUT_S)
        assert up.returncode == 0, f"nox -s up failed:\n{up.stdout[-3000:]}\n{up.stderr[-6000:]}"
        lines = [line for line in up.stdout.splitlines() if line.startswith("endpoint: ")]
        assert lines, f"no endpoint line in:\n{up.stdout[-3000:]}"
        yield lines[-1].removeprefix("endpoint: ").strip()
    finally:
        down = _nox("-s", "down", "--", "--profile", "kind-cpu", timeout_s=15 * 60)
        assert down.returncode == 0, f"nox -s down failed:\n{down.stderr[-4000:]}"


def test_imagine_through_the_ingress(kind_cpu_endpoint: str) -> None:
    assert kind_cpu_endpoint.startswith("http://127.0.0.1:8080/dogbooth/serve/")
    response = httpx.get(kind_cpu_endpoint, params={"prompt": "a photo of a dog", "steps": 2, "seed": 1}, timeout=180)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")


def test_empty_prompt_is_a_4xx_through_the_ingress(kind_cpu_endpoint: str) -> None:
    response = httpx.get(kind_cpu_endpoint, params={"prompt": " "}, timeout=60)
    assert 400 <= response.status_code < 500
