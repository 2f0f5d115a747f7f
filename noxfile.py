"""dogbooth's entry points. Each session is a thin call into `python -m dogbooth` or pytest.

All sessions share one virtualenv (`.nox/dogbooth`, see dogbooth/bootstrap.py); extra arguments
after `--` pass through, e.g. `nox -s up -- --profile local --port 8001`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the noxfile runs under nox's own Python
from dogbooth.bootstrap import env_python  # noqa: E402

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"


def _dogbooth(session: nox.Session, command: str, *args: str) -> None:
    python = env_python(session.run)
    session.run(python, "-m", "dogbooth", command, *args, *session.posargs, external=True)


@nox.session(venv_backend="none")
def dev(session: nox.Session) -> None:
    """Foreground dev loop with live reload; picks kind-cpu when its tools exist, else local."""
    _dogbooth(session, "dev")


@nox.session(venv_backend="none")
def up(session: nox.Session) -> None:
    """Bring a profile up detached (default local); the last line is `endpoint: <url>`."""
    _dogbooth(session, "up")
    # The contract is that the endpoint is the last line printed; nox's own success line would follow.
    logging.getLogger("nox").setLevel(logging.WARNING)


@nox.session(venv_backend="none")
def down(session: nox.Session) -> None:
    """Stop what up or dev started for a profile; safe to run twice."""
    _dogbooth(session, "down")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (real Ray Serve over HTTP on the tiny model); pytest args pass through."""
    python = env_python(session.run)
    session.run(python, "-m", "pytest", *(session.posargs or ["-q"]), external=True)


@nox.session(venv_backend="none", default=False)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy."""
    python = env_python(session.run)
    session.run(python, "-m", "ruff", "check", ".", external=True)
    session.run(python, "-m", "ruff", "format", "--check", ".", external=True)
    session.run(python, "-m", "mypy", external=True)
