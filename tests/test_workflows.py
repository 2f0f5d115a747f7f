"""The GitHub workflows in .github/workflows/: valid against GitHub's workflow schema (check-jsonschema,
offline, the schema it ships), and kind-e2e.yml doing what it says: tools at versions dogbooth accepts,
`up` of kind-cpu, a bounded wait for a 200 through the ingress, a Locust run, the report uploaded and
the cluster torn down whatever happened.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dogbooth import cli
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import TOOLS, parse_version
from dogbooth.platforms.kubesteps import kind_settings, required_tools
from dogbooth.settings import profiles

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
KIND_E2E = WORKFLOWS / "kind-e2e.yml"
SCHEMA = "vendor.github-workflows"
# The workflow's env variable for each tool it installs (docker comes with the runner).
VERSION_VARS = {
    "kind": "KIND_VERSION",
    "ctlptl": "CTLPTL_VERSION",
    "kubectl": "KUBECTL_VERSION",
    "helm": "HELM_VERSION",
    "tilt": "TILT_VERSION",
}
MAX_STEP_TIMEOUT_MIN = 360  # GitHub's documented maximum for steps[*].timeout-minutes


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.y*ml"))


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMA, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return dict(data)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load(KIND_E2E)


@pytest.fixture(scope="module")
def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return list(job["steps"])


def expand(text: str, env: dict[str, Any]) -> str:
    """`text` with the workflow-level env variables ($NAME, ${NAME}) substituted, as the shell would."""
    for name, value in env.items():
        text = re.sub(rf"\$\{{{name}\}}|\${name}\b", str(value), text)
    return text


def step_running(steps: list[dict[str, Any]], pattern: str) -> tuple[int, dict[str, Any]]:
    found = [(i, s) for i, s in enumerate(steps) if re.search(pattern, s.get("run", ""))]
    assert len(found) == 1, f"{len(found)} steps run {pattern!r}"
    return found[0]


def session_args(run: str, session: str) -> list[str]:
    """The arguments after `nox -s <session> --` in a step's script (line continuations joined)."""
    line = next(ln for ln in run.replace("\\\n", " ").splitlines() if f"nox -s {session} -- " in ln)
    words = shlex.split(line.split(f"nox -s {session} -- ", 1)[1].split("|")[0])
    return words


# --- the schema ---------------------------------------------------------------------------------


def test_the_kind_workflow_is_there() -> None:
    assert KIND_E2E in workflow_files()


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_each_workflow_matches_githubs_schema(path: Path) -> None:
    result = check_jsonschema(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def _drop_runs_on(w: dict[str, Any]) -> None:
    del next(iter(w["jobs"].values()))["runs-on"]


def _misspell_a_step_key(w: dict[str, Any]) -> None:
    step = next(iter(w["jobs"].values()))["steps"][-1]
    step["nmae"] = step.pop("name")


def _timeout_in_words(w: dict[str, Any]) -> None:
    next(iter(w["jobs"].values()))["timeout-minutes"] = "soon"


def _no_trigger(w: dict[str, Any]) -> None:
    del w["on"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        pytest.param(_drop_runs_on, "'runs-on' is a required property", id="no runs-on"),
        pytest.param(_misspell_a_step_key, "'nmae' was unexpected", id="misspelt step key"),
        pytest.param(_timeout_in_words, "'soon' is not of type 'number'", id="timeout in words"),
        pytest.param(_no_trigger, "'on' is a required property", id="no trigger"),
    ],
)
def test_a_broken_copy_fails_the_check(
    tmp_path: Path, breakage: Callable[[dict[str, Any]], None], message: str
) -> None:
    intact, broken = tmp_path / "intact.yml", tmp_path / "broken.yml"
    intact.write_text(yaml.safe_dump(load(KIND_E2E), sort_keys=False))
    data = load(KIND_E2E)
    breakage(data)
    broken.write_text(yaml.safe_dump(data, sort_keys=False))
    assert check_jsonschema(intact).returncode == 0  # the copy itself is fine: the breakage is what fails
    result = check_jsonschema(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Schema validation errors were encountered" in result.stdout
    assert message in result.stdout


# --- the tool versions ----------------------------------------------------------------------------


def test_it_pins_every_kind_tool_but_docker(workflow: dict[str, Any]) -> None:
    assert set(VERSION_VARS) == set(required_tools("kind", "dev")) - {"docker"}
    assert set(VERSION_VARS.values()) <= set(workflow["env"])


@pytest.mark.parametrize("tool", sorted(VERSION_VARS))
def test_each_pinned_version_meets_dogbooths_minimum(workflow: dict[str, Any], tool: str) -> None:
    pinned = str(workflow["env"][VERSION_VARS[tool]])
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), f"{tool}: {pinned!r} is not a concrete version"
    version = parse_version(pinned)
    assert version is not None and version >= TOOLS[tool].minimum, (
        f"{tool} {pinned} is older than dogbooth's minimum {TOOLS[tool].minimum} (dogbooth/core/tools.py)"
    )


@pytest.mark.parametrize("tool", sorted(VERSION_VARS))
def test_each_version_is_written_once_in_env_and_used_from_there(
    workflow: dict[str, Any], steps: list[dict[str, Any]], tool: str
) -> None:
    var = VERSION_VARS[tool]
    pinned = str(workflow["env"][var])
    assert pinned not in yaml.safe_dump(steps), f"{tool} {pinned} is also written in a step"
    _, install = step_running(steps, r"sha256sum --check")
    assert f"${{{var}}}" in install["run"], f"the install step does not use ${var}"


def test_kubectl_is_within_one_minor_version_of_the_kind_node(workflow: dict[str, Any]) -> None:
    kubectl = parse_version(str(workflow["env"]["KUBECTL_VERSION"]))
    kind = kind_settings(profiles.load(workflow["env"]["PROFILE"]))
    # kindest/node:v1.33.7@sha256:... where the profile pins the image, else its kubernetes_version
    node = parse_version(str(getattr(kind, "node_image", None) or getattr(kind, "kubernetes_version", "")))
    assert kubectl and node and kubectl[0] == node[0] and abs(kubectl[1] - node[1]) <= 1, (kubectl, node)


def test_its_python_is_one_dogbooth_supports(workflow: dict[str, Any]) -> None:
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = parse_version(requires.removeprefix(">="))
    assert minimum and (parse_version(str(workflow["env"]["PYTHON_VERSION"])) or ()) >= minimum


# --- the flow -------------------------------------------------------------------------------------


def test_every_job_and_step_has_a_timeout_and_the_job_outlasts_its_steps(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        limits = [step.get("timeout-minutes") for step in job["steps"]]
        assert all(isinstance(t, int) and 0 < t <= MAX_STEP_TIMEOUT_MIN for t in limits), (name, limits)
        assert isinstance(job.get("timeout-minutes"), int), name
        # the job's own limit must not cut the always() steps (upload, teardown) short
        assert job["timeout-minutes"] >= sum(limits), (name, job["timeout-minutes"], sum(limits))


def test_actions_are_pinned_to_a_major_version(steps: list[dict[str, Any]]) -> None:
    used = [s["uses"] for s in steps if "uses" in s]
    assert {u.split("@")[0] for u in used} >= {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}
    assert all(re.fullmatch(r"actions/[\w-]+@v\d+", u) for u in used), used


def test_it_brings_up_kind_cpu_and_keeps_the_printed_endpoint(workflow: dict[str, Any], steps: list) -> None:
    _, up = step_running(steps, r"nox -s up -- (?!.*--dry-run)")
    run = expand(up["run"], workflow["env"])
    args = cli.parser().parse_args(["up", *session_args(run, "up")])
    assert (args.profile, args.dry_run) == ("kind-cpu", False)
    # `up` prints `endpoint: <url>` last; the step hands it to the later steps as an output
    assert "grep '^endpoint: '" in run and '>> "$GITHUB_OUTPUT"' in run
    assert up.get("id") == "up"


def test_it_waits_for_a_200_through_the_ingress_with_bounded_retries(steps: list[dict[str, Any]]) -> None:
    i_up, _ = step_running(steps, r"nox -s up -- (?!.*--dry-run)")
    i_wait, wait = step_running(steps, r"(?s)curl .*\$ENDPOINT")
    i_load, _ = step_running(steps, r"nox -s loadtest -- ")
    assert i_up < i_wait < i_load
    assert wait["env"]["ENDPOINT"] == "${{ steps.up.outputs.endpoint }}"
    run = wait["run"]
    assert '"$ENDPOINT"' in run and "prompt=" in run and "= 200 ]" in run
    tries = re.search(r"for \w+ in \$\(seq 1 (\d+)\)", run)
    pause = re.search(r"sleep (\d+)", run)
    per_try = re.search(r"--max-time (\d+)", run)
    assert tries and pause and per_try, "the wait must be a bounded loop with a per-try limit"
    worst_s = int(tries[1]) * (int(pause[1]) + int(per_try[1]))
    assert worst_s <= wait["timeout-minutes"] * 60, (worst_s, wait["timeout-minutes"])
    assert "exit 1" in run.rsplit("done", 1)[1], "running out of tries must fail the step"


def test_it_load_tests_the_endpoint_for_60_s(workflow: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    _, load_step = step_running(steps, r"nox -s loadtest -- ")
    run = expand(load_step["run"], workflow["env"])
    args = cli.parser().parse_args(["loadtest", *session_args(run, "loadtest")])
    assert args.profile == "kind-cpu"  # kind-cpu's request mix and SLO
    assert args.host == "${ENDPOINT%/imagine}"  # the base URL: `up` prints .../imagine
    assert load_step["env"]["ENDPOINT"] == "${{ steps.up.outputs.endpoint }}"
    assert (args.users, args.run_time, args.report_dir) == (4, "60s", Path("reports/loadtest-kind"))


def test_it_uploads_the_report_always_and_tears_down_last_always(
    workflow: dict[str, Any], steps: list[dict[str, Any]]
) -> None:
    uploads = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 1
    upload = steps[uploads[0]]
    assert upload.get("if") == "always()"
    paths = expand(upload["with"]["path"].replace("${{ env.", "${").replace(" }}", "}"), workflow["env"])
    assert "reports/loadtest-kind/" in paths.split()

    down = steps[-1]
    assert down.get("if") == "always()"
    args = cli.parser().parse_args(["down", *session_args(expand(down["run"], workflow["env"]), "down")])
    assert (args.profile, args.dry_run) == ("kind-cpu", False)
    i_load, _ = step_running(steps, r"nox -s loadtest -- ")
    assert i_load < uploads[0] < len(steps) - 1
