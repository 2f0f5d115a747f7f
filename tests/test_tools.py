"""The tool check and the command runner, against real small executables on a private PATH."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from faketools import NEW_ENOUGH, write_tool

from dogbooth.core import tools
from dogbooth.core.errors import CommandFailed, MissingTools

# The private PATH holds only the fake tools, so the scripts call these by absolute path.
SLEEP, CAT = shutil.which("sleep"), shutil.which("cat")


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that is the whole PATH: only the tools a test writes exist."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Docker version 27.3.1, build ce12230", (27, 3, 1)),
        ("kind version 0.27.0", (0, 27, 0)),
        ("Client Version: v1.31.2\nKustomize Version: v5.4.2", (1, 31, 2)),
        ("v3.16.2+g13654a5", (3, 16, 2)),
        ("v0.33.21, built 2024-11-08", (0, 33, 21)),
        ("aws-cli/2.22.0 Python/3.12.6 Linux/6.8", (2, 22, 0)),
        ("0.199.0", (0, 199, 0)),
        ("no digits here", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert tools.parse_version(text) == version


def test_one_error_lists_every_missing_or_old_tool_with_hints(bin_dir: Path) -> None:
    write_tool(bin_dir, "docker", 'echo "Docker version 27.3.1, build x"')
    write_tool(bin_dir, "kind", 'echo "kind version 0.20.0"')  # too old
    write_tool(bin_dir, "ctlptl", "echo broken >&2; exit 1")  # version unreadable
    write_tool(bin_dir, "kubectl", 'echo "Client Version: v1.34.7"')
    names = ["docker", "kind", "ctlptl", "kubectl", "helm", "tilt"]
    with pytest.raises(MissingTools) as info:
        tools.require(names, purpose="dev on kind-cpu")
    problems = info.value.problems
    assert [p.split()[0].rstrip(":") for p in problems] == ["kind", "ctlptl", "helm", "tilt"]
    assert "0.20 is too old" in problems[0] or "0.20.0 is too old" in problems[0]
    assert all(("install:" in p or "upgrade:" in p or "reinstall:" in p) and "https://" in p for p in problems)
    assert "--dry-run" in str(info.value) and "4 required tool(s)" in str(info.value)


def test_all_present_and_new_enough_passes(bin_dir: Path) -> None:
    write_tool(bin_dir, "helm", 'test "$1 $2" = "version --short" && echo v3.20.2+g1f8d8d4')
    write_tool(bin_dir, "tilt", 'echo "v0.33.21, built 2024-11-08"')
    assert tools.find_problems(["helm", "tilt"]) == []
    tools.require(["helm", "tilt"])


def test_runner_returns_output_and_logs_the_command(bin_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tool(bin_dir, "kubectl", f'echo "args: $*"; {CAT}')
    with caplog.at_level(logging.INFO, logger="dogbooth.run"):
        out = tools.Runner().run(["kubectl", "apply", "-f", "-"], input="kind: Namespace\n")
    assert out == "args: apply -f -\nkind: Namespace\n"
    assert "$ kubectl apply -f -" in caplog.text
    assert "kind: Namespace" not in caplog.text  # stdin (configs, tokens) is never logged


def test_runner_failure_carries_stderr(bin_dir: Path) -> None:
    write_tool(bin_dir, "eksctl", 'echo "progress" ; echo "Error: no cluster found for name: x" >&2; exit 3')
    with pytest.raises(CommandFailed) as info:
        tools.Runner().run(["eksctl", "get", "cluster", "--name", "x"])
    assert info.value.returncode == 3
    assert "no cluster found" in info.value.stderr
    assert "`eksctl get cluster --name x` exited 3" in str(info.value)


def test_runner_accepts_listed_exit_codes(bin_dir: Path) -> None:
    write_tool(bin_dir, "tilt", "echo bye; exit 130")
    assert tools.Runner().run(["tilt", "up"], ok_codes=(0, 130)) == "bye\n"


def test_runner_missing_executable_names_the_install(bin_dir: Path) -> None:
    with pytest.raises(MissingTools) as info:
        tools.Runner().run(["ctlptl", "apply", "-f", "-"])
    assert "ctlptl: not found on PATH; install: https://github.com/tilt-dev/ctlptl" in str(info.value)


def test_runner_streams_output_and_keeps_stderr(bin_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    write_tool(bin_dir, "docker", 'echo "step 1/2"; echo "warning: slow" >&2; echo "step 2/2"')
    assert tools.Runner().run(["docker", "build", "."], stream=True) == ""
    out, err = capfd.readouterr()
    assert "step 1/2" in out and "step 2/2" in out and "warning: slow" in err


def test_runner_timeout_kills_the_child(bin_dir: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    write_tool(bin_dir, "aws", f"echo $$ > {pid_file}; exec {SLEEP} 30")
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after 1s"):
        tools.Runner().run(["aws", "sts", "get-caller-identity"], timeout_s=1)
    assert time.monotonic() - started < 15
    assert not psutil.pid_exists(int(pid_file.read_text()))


def test_cancelled_run_terminates_the_child(bin_dir: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    write_tool(bin_dir, "kind", f"echo $$ > {pid_file}; exec {SLEEP} 60")

    main = threading.main_thread().ident
    assert main is not None

    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_file.exists():
            time.sleep(0.2)  # let the runner settle into waiting on the child
            signal.pthread_kill(main, signal.SIGINT)  # what Ctrl-C does to the CLI

    threading.Thread(target=interrupt_once_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        tools.Runner().run(["kind", "create", "cluster"])
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid), "the child outlived the cancelled run"


def test_runner_env_and_cwd(bin_dir: Path, tmp_path: Path) -> None:
    write_tool(bin_dir, "docker", 'echo "$DOGBOOTH_X $PWD"')
    out = tools.Runner(env={"DOGBOOTH_X": "hello"}, cwd=tmp_path).run(["docker"])
    assert out.strip() == f"hello {os.path.realpath(tmp_path)}"


def test_python_is_not_needed_on_path(bin_dir: Path, tmp_path: Path) -> None:
    """Where dogbooth hands work to Python (Tilt's chart render, Ray), it names the venv's, not PATH's."""
    from dogbooth.platforms import kind, kubesteps, local, plan
    from dogbooth.settings import profiles

    assert shutil.which("python") is None and shutil.which("python3") is None and shutil.which("ray") is None
    assert Path(local._ray_executable()) == Path(sys.executable).parent / "ray"
    # `dev`'s last step runs tilt, whose Tiltfile runs `$DOGBOOTH_PYTHON -m dogbooth ...`.
    out = tmp_path / "tilt-python"
    write_tool(bin_dir, "tilt", f'"$DOGBOOTH_PYTHON" -c "import dogbooth, sys; print(sys.executable)" > {out}')
    profile = profiles.load("kind-cpu")
    tilt_step = kind.dev(profile).steps[-1]
    assert tilt_step.title.startswith("tilt up")
    tilt_step.action(plan.Context(profile, kubesteps.kube_target(profile)))
    assert out.read_text().strip() == sys.executable


def test_dev_picks_kind_cpu_only_when_every_tool_is_new_enough(bin_dir: Path) -> None:
    from dogbooth.platforms import devloop

    for name in ("docker", "kind", "ctlptl", "kubectl", "helm", "tilt"):
        text = NEW_ENOUGH[name]
        write_tool(bin_dir, name, f'echo "{text}"')
    assert devloop.choose_profile()[0] == "kind-cpu"
    write_tool(bin_dir, "tilt", 'echo "v0.30.0, built 2022-01-01"')  # present but too old
    name, reason = devloop.choose_profile()
    assert name == "local" and reason.startswith("tilt missing or too old")
