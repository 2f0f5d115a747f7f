"""External command-line tools: which ones a flow needs, their versions, and one runner for all of them.

Every call to docker, kind, ctlptl, kubectl, tilt, eksctl or aws goes through `Runner.run`: it logs
the command, returns its output, turns a non-zero exit into `CommandFailed` carrying the tool's
stderr, and stops the child when the run is cancelled. Helm is driven through pyhelm3, which
follows the same rules (see dogbooth/platforms/helm.py).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dogbooth.core.errors import CommandFailed, MissingTools

log = logging.getLogger("dogbooth.run")

Version = tuple[int, ...]
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Tool:
    """A tool, how to ask it for its version, the oldest version we accept and how to install it."""

    name: str
    version_args: tuple[str, ...]
    minimum: Version
    install: str

    def problem(self, found: Version | None) -> str | None:
        """None when `found` is good enough, else a line for the MissingTools message."""
        want = ".".join(map(str, self.minimum))
        if found is None:
            return f"{self.name}: could not read its version (need >= {want}); reinstall: {self.install}"
        if found < self.minimum:
            have = ".".join(map(str, found))
            return f"{self.name} {have} is too old (need >= {want}); upgrade: {self.install}"
        return None


# `--version` where the tool has it; kubectl, helm, ctlptl, tilt and eksctl print theirs with a
# `version` subcommand instead (kubectl and helm reject `--version`).
TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("docker", ("--version",), (24, 0), "https://docs.docker.com/engine/install/"),
        # kind: the release whose notes list the profiles' node image (cluster.kind.node_image);
        # ctlptl: the first release that knows that kind (docs/kind.md, version matrix).
        Tool("kind", ("--version",), (0, 31), "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"),
        Tool("ctlptl", ("version",), (0, 8, 44), "https://github.com/tilt-dev/ctlptl#how-do-i-install-it"),
        # kubectl 1.34: within one minor (Kubernetes' skew policy) of both the 1.33 kind node and eks's
        # 1.35; helm 3.20: its tested range (Helm's version-skew table) is 1.32 to 1.35, both of them.
        Tool("kubectl", ("version", "--client"), (1, 34), "https://kubernetes.io/docs/tasks/tools/"),
        Tool("helm", ("version", "--short"), (3, 20), "https://helm.sh/docs/intro/install/"),
        Tool("tilt", ("version",), (0, 33, 17), "https://docs.tilt.dev/install.html"),
        # eksctl 0.227: the first whose Karpenter IAM policy has ec2:DescribeCapacityReservations.
        Tool("eksctl", ("version",), (0, 227), "https://eksctl.io/installation/"),
        Tool(
            "aws",
            ("--version",),
            (2, 15),
            "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html",
        ),
    )
}


def env_executable(name: str) -> str | None:
    """A console script of this Python's environment (the shared env need not be on PATH), else PATH's."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def parse_version(text: str) -> Version | None:
    """The first dotted version in a tool's version output: 'Docker version 27.3.1, build x' -> (27, 3, 1)."""
    m = _VERSION.search(text)
    if m is None:
        return None
    return tuple(int(part) for part in m.groups() if part is not None)


def tool_version(tool: Tool, which: Callable[[str], str | None] = shutil.which) -> Version | None:
    path = which(tool.name)
    if path is None:
        raise FileNotFoundError(tool.name)
    try:
        out = subprocess.run([path, *tool.version_args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(out.stdout + out.stderr) if out.returncode == 0 else None


def find_problems(names: Iterable[str], which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """One line per tool that is missing or too old, each with how to install it; [] when all are fine."""
    problems = []
    for name in names:
        tool = TOOLS[name]
        try:
            problem = tool.problem(tool_version(tool, which))
        except FileNotFoundError:
            problem = f"{name}: not found on PATH; install: {tool.install}"
        if problem:
            problems.append(problem)
    return problems


def require(names: Iterable[str], *, purpose: str = "") -> None:
    """Raise one MissingTools listing every missing or too-old tool among `names`."""
    problems = find_problems(names)
    if problems:
        error = MissingTools(problems)
        if purpose:
            error.args = (f"{error}\n(needed for {purpose}; `--dry-run` shows the plan without any of them)",)
        raise error


def _drain(stream: IO[str], keep: deque[str], echo: IO[str] | None) -> None:
    for line in stream:
        keep.append(line)
        if echo is not None:
            echo.write(line)
            echo.flush()


@dataclass
class Runner:
    """Runs external commands: logs each, captures output, raises typed errors.

    `stream=True` passes the tool's output through to the terminal while it runs (for long steps
    such as `eksctl create cluster` or `tilt up`, whose UI also keeps the terminal's stdin); stderr
    is still kept for the error message.
    """

    env: Mapping[str, str] | None = None
    cwd: Path | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        stream: bool = False,
        timeout_s: float | None = None,
        ok_codes: Sequence[int] = (0,),
        env: Mapping[str, str] | None = None,
    ) -> str:
        argv = [str(a) for a in argv]
        log.info("$ %s", shlex.join(argv))
        extra = {**(self.env or {}), **(env or {})}
        full_env = {**os.environ, **extra} if extra else None
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=full_env,
                text=True,
                stdin=subprocess.PIPE if input is not None else None if stream else subprocess.DEVNULL,
                stdout=None if stream else subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as e:
            tool = TOOLS.get(Path(argv[0]).name)
            hint = f"; install: {tool.install}" if tool else ""
            raise MissingTools([f"{argv[0]}: not found on PATH{hint}"]) from e
        out_lines: deque[str] = deque()  # unbounded: callers parse stdout (JSON, names)
        err_tail: deque[str] = deque(maxlen=400)
        readers = [
            threading.Thread(target=_drain, args=(proc.stderr, err_tail, sys.stderr if stream else None), daemon=True)
        ]
        if proc.stdout is not None:
            readers.append(threading.Thread(target=_drain, args=(proc.stdout, out_lines, None), daemon=True))
        for reader in readers:
            reader.start()
        try:
            if input is not None and proc.stdin is not None:
                proc.stdin.write(input)
                proc.stdin.close()
            _wait(proc, timeout_s)
        except subprocess.TimeoutExpired as e:
            _terminate(proc)
            raise CommandFailed(argv, -1, f"timed out after {timeout_s:.0f}s\n{''.join(err_tail)}") from e
        except BaseException:
            # Cancelled (Ctrl-C, SIGTERM): the child must not outlive us.
            _terminate(proc)
            raise
        for reader in readers:
            reader.join(timeout=30)
        if proc.returncode not in ok_codes:
            raise CommandFailed(argv, proc.returncode, "".join(err_tail))
        return "".join(out_lines)


def _wait(proc: subprocess.Popen[str], timeout_s: float | None) -> None:
    """Wait in short slices, so a signal handled in another thread still reaches us promptly."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            proc.wait(timeout=0.5)
            return
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def _terminate(proc: subprocess.Popen[str], grace_s: float = 10) -> None:
    if proc.poll() is not None:
        return
    log.info("stopping %s (pid %d)", Path(str(proc.args[0])).name, proc.pid)  # type: ignore[index]
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
