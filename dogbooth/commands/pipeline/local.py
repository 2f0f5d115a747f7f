"""`python -m dogbooth pipeline --profile local`: every step in this process, on the profile's model.

This proves the step logic without Argo: the same functions the WorkflowTemplate's containers call.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from dogbooth.commands.loadgen import imagine_path
from dogbooth.commands.pipeline import steps
from dogbooth.commands.pipeline.deploy import deploy_local
from dogbooth.settings.profiles import Profile
from services.adapters import store_dir
from training.export import publish_adapter

log = logging.getLogger("dogbooth.commands.pipeline")


@dataclass(frozen=True)
class LocalResult:
    export_dir: Path
    report: steps.ValidationReport
    endpoint: str
    adapter_id: str | None = None  # set when the export was published as an adapter instead of rolled
    endpoint_or_store: str = ""
    curl: str = ""


def curl_for(profile: Profile, adapter_id: str, prompt: str) -> str:
    """A ready-to-run request for the adapter on the profile's endpoint."""
    path = imagine_path({"prompt": prompt, "seed": 7, "adapter": adapter_id})
    url = f"http://127.0.0.1:{profile.serve.http_port}{path}"
    return f"curl -o {adapter_id}.png -H {shlex.quote('serve_multiplexed_model_id: ' + adapter_id)} {shlex.quote(url)}"


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
    steps.gate_report(report, params.threshold)
    if prepared.config.model.method == "lora":
        return _publish(profile, params, export_dir, report, prepared.config.data.instance_prompt)
    _say(5, f"deploy: profile {profile.name} serving {export_dir}")
    endpoint = deploy_local(profile, export_dir)
    log.info("pipeline done in %.0f s", time.monotonic() - started)
    return LocalResult(export_dir, report, endpoint)


def _publish(
    profile: Profile, params: steps.Params, export_dir: Path, report: steps.ValidationReport, prompt: str
) -> LocalResult:
    """A LoRA passed the gate: into the store, where the running service finds it; nothing is rolled."""
    adapter_id = params.adapter_id  # checked before the steps ran (pipeline/command.py)
    if adapter_id is None:
        raise steps.PipelineInputError("--method lora publishes into the adapter store: give --adapter-id")
    store = store_dir(profile.serve.app)
    _say(5, f"publish: adapter {adapter_id} into {store} (the service is not restarted)")
    target = publish_adapter(export_dir, store, adapter_id)
    return LocalResult(export_dir, report, "", adapter_id, str(target), curl_for(profile, adapter_id, prompt))
