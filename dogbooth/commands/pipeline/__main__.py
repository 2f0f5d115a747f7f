"""`python -m dogbooth.commands.pipeline <step>`: one pipeline step, as a container of the WorkflowTemplate runs it.

Empty flag values mean "not given": Argo passes every workflow parameter, set or not.
Exit codes: 0 done, 1 a dogbooth error (message on stderr; for `gate`: score below threshold).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dogbooth.commands.pipeline import steps
from dogbooth.commands.pipeline.deploy import wait_ready
from dogbooth.core.errors import DogboothError
from dogbooth.settings.gate import DEFAULT_SCORER


def _opt(value: str | None) -> str | None:
    return value or None


def _params(a: argparse.Namespace) -> steps.Params:
    return steps.Params(
        training_config=a.config,
        output_dir=Path(a.output),
        base_model=_opt(a.base_model),
        instance_dir=Path(a.instance_dir) if a.instance_dir else None,
        steps=int(a.steps) if a.steps else None,
        method=_opt(a.method),
        hub_repo=_opt(a.hub_repo),
    )


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training/configs/<name>.yaml or a path")
    p.add_argument("--output", required=True, help="export directory on the model volume")
    for flag in ("--base-model", "--instance-dir", "--steps", "--method", "--hub-repo"):
        p.add_argument(flag, default="")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m dogbooth.commands.pipeline")
    sub = root.add_subparsers(dest="step", required=True)
    for name in ("prepare", "train", "validate"):
        _run_args(sub.add_parser(name))
    sub.choices["prepare"].add_argument(
        "--require-hub-repo",
        action="store_true",
        help="fail unless --hub-repo is given (per-pod model caches)",
    )
    validate = sub.choices["validate"]
    validate.add_argument("--scorer", default=DEFAULT_SCORER)
    validate.add_argument("--score-file", type=Path, help="write the score here (an Argo output parameter)")
    gate = sub.add_parser("gate")
    gate.add_argument("--score", type=float, required=True)
    gate.add_argument("--threshold", type=float, required=True)
    wait = sub.add_parser("wait-ready")
    wait.add_argument("--url", required=True, help="the Serve /readyz URL")
    wait.add_argument("--model", required=True, help="the model reference that must be served")
    wait.add_argument("--timeout", type=float, default=1800)
    return root


def run_step(a: argparse.Namespace) -> None:
    if a.step == "gate":
        return steps.gate(a.score, a.threshold)
    if a.step == "wait-ready":
        wait_ready(a.url, a.model, timeout_s=a.timeout)
        return None
    params = _params(a)
    if a.step == "prepare":
        if a.require_hub_repo and not params.hub_repo:
            raise steps.PipelineInputError(
                "the hub-repo parameter is required on this cluster: each Serve worker has its own model "
                "cache, so the new model reaches them through the Hub (argo submit -p hub-repo=org/name)"
            )
        steps.prepare(params)
    elif a.step == "train":
        steps.train(steps.staged(params), resume="latest")  # `latest`: a retried pod resumes its own run
    else:
        prepared = steps.staged(params)
        report = steps.validate(
            params.output_dir, prepared.instance_dir, prepared.config, scorer=a.scorer, compare_base=False
        )
        print(report.describe(), flush=True)
        if a.score_file:
            a.score_file.write_text(f"{report.score:.6f}")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth: %(message)s", stream=sys.stderr)
    try:
        run_step(parser().parse_args(argv))
    except DogboothError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
