"""`python -m dogbooth pipeline --profile local`: every step in this process, on the profile's model.

This proves the step logic without Argo: the same functions the WorkflowTemplate's containers call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dogbooth.commands.pipeline import steps
from dogbooth.commands.pipeline.deploy import deploy_local
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.commands.pipeline")


@dataclass(frozen=True)
class LocalResult:
    export_dir: Path
    report: steps.ValidationReport
    endpoint: str


def _say(step: int, text: str) -> None:
    print(f"[{step}/5] {text}", flush=True)


def run(profile: Profile, params: steps.Params) -> LocalResult:
    """prepare -> train -> validate -> gate -> deploy; GateFailed (nothing deployed) below the threshold."""
    started = time.monotonic()
    _say(1, f"prepare: instance images ({params.instance_dir or 'generated dataset'})")
    prepared = steps.prepare(params)
    _say(
        2,
        f"train: {prepared.count} image(s), base {prepared.config.model.base_model}, "
        f"{prepared.config.train.max_train_steps} step(s) -> {params.output_dir}",
    )
    export_dir = steps.train(prepared)
    _say(3, f"validate: {len(prepared.config.validation.prompts)} prompt(s), scorer {params.scorer}")
    report = steps.validate(
        export_dir,
        prepared.instance_dir,
        prepared.config,
        scorer=params.scorer,
        compare_base=params.compare_base,
    )
    print(report.describe(), flush=True)
    _say(4, f"gate: score {report.score:.4f} against threshold {params.threshold:.4f}")
    steps.gate(report.score, params.threshold)
    _say(5, f"deploy: profile {profile.name} serving {export_dir}")
    endpoint = deploy_local(profile, export_dir)
    log.info("pipeline done in %.0f s", time.monotonic() - started)
    return LocalResult(export_dir, report, endpoint)
