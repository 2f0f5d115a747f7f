"""dogbooth's entry points. Each session is a thin call into `python -m dogbooth` or pytest.

All sessions share one virtualenv (`.nox/dogbooth`, see dogbooth/bootstrap.py); extra arguments
after `--` pass through, e.g. `nox -s up -- --profile local --port 8001`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the noxfile runs under nox's own Python
from dogbooth.bootstrap import TIMES_ENV, env_python, process_started_at  # noqa: E402

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"


def _dogbooth(session: nox.Session, command: str, *args: str) -> None:
    checking = time.time()
    python = env_python(session.run)
    times = f"{process_started_at() or checking},{checking},{time.time()}"  # for `up --timings`
    session.run(python, "-m", "dogbooth", command, *args, *session.posargs, env={TIMES_ENV: times}, external=True)


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


@nox.session(venv_backend="none", default=False)
def cloud(session: nox.Session) -> None:
    """`up` on EKS (profile eks): eksctl, ECR image, add-ons, chart; `-- --dry-run` prints the plan."""
    _dogbooth(session, "cloud")


@nox.session(venv_backend="none")
def doctor(session: nox.Session) -> None:
    """Preflight in seconds, one ok/FIX row per check: `-- --profile kind-cpu`; exits 1 on any FIX."""
    _dogbooth(session, "doctor")


@nox.session(venv_backend="none")
def render(session: nox.Session) -> None:
    """Render charts/dogbooth and releases.yaml: `-- --profile kind-cpu --output out/kind-cpu`."""
    _dogbooth(session, "render")


@nox.session(venv_backend="none", default=False)
def train(session: nox.Session) -> None:
    """DreamBooth fine-tune: `-- --profile local --max-train-steps 30 --output DIR`; eks|kind-gpu: a Job."""
    _dogbooth(session, "train")


@nox.session(venv_backend="none", default=False)
def pipeline(session: nox.Session) -> None:
    """Fine-tune, validate, gate, deploy: `-- --profile local` in-process; eks|kind via Argo (`--dry-run`)."""
    _dogbooth(session, "pipeline")
    logging.getLogger("nox").setLevel(logging.WARNING)  # the endpoint stays the last line printed


@nox.session(venv_backend="none", default=False)
def fetch_schemas(session: nox.Session) -> None:
    """Download the pinned CRDs and JupyterHub schema: `-- --output DIR`; then DOGBOOTH_SCHEMA_DIR=DIR."""
    _dogbooth(session, "fetch-schemas")


@nox.session(venv_backend="none", default=False)
def reliability(session: nox.Session) -> None:
    """Fuzz, OpenAPI contract, overload, kill, soak (--soak-s), updates, exposure, train, auth; reports/reliability/."""
    _dogbooth(session, "reliability")


@nox.session(venv_backend="none", default=False)
def loadtest(session: nox.Session) -> None:
    """Locust load test, report, SLO gate: `-- --profile local --users 4 --run-time 30s --report-dir DIR`."""
    _dogbooth(session, "loadtest")


@nox.session(venv_backend="none", default=False)
def metrics(session: nox.Session) -> None:
    """One screen from a running stack's Prometheus endpoint: `-- --profile local`, or `-- --url URL`."""
    _dogbooth(session, "metrics")


@nox.session(venv_backend="none", default=False)
def bench(session: nox.Session) -> None:
    """Raw (best threads) vs dogbooth vs the anchor app on tiny, small; `-- --models sd15 --device cuda` on a GPU."""
    _dogbooth(session, "bench")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (real Ray Serve over HTTP on the tiny model); pytest args pass through."""
    python = env_python(session.run)
    session.run(python, "-m", "pytest", *(session.posargs or ["-q"]), external=True)


@nox.session(venv_backend="none", default=False)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check), mypy, the layer contracts (import-linter), the CI workflows' schema."""
    python = env_python(session.run)
    session.run(python, "-m", "ruff", "check", ".", external=True)
    session.run(python, "-m", "ruff", "format", "--check", ".", external=True)
    session.run(python, "-m", "mypy", external=True)
    session.run(str(Path(python).with_name("lint-imports")), "--no-cache", external=True)
    workflows = sorted(str(p) for p in Path(__file__).resolve().parent.glob(".github/workflows/*.y*ml"))
    session.run(
        python, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows, external=True
    )
