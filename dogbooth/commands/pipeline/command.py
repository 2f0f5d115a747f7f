"""`python -m dogbooth pipeline --profile P`: local profiles run the steps here, cluster ones use Argo."""

from __future__ import annotations

import argparse
from pathlib import Path

from dogbooth.commands.pipeline import local, steps
from dogbooth.commands.train import check_adapter_id
from dogbooth.core.errors import ProfileError
from dogbooth.core.names import MODEL_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import argo as argo_submit
from dogbooth.render import argo
from dogbooth.settings.gate import DEFAULT_SCORER, LOCAL_SCORER, default_threshold
from dogbooth.settings.profiles import Profile

DEFAULT_OUTPUT = REPO_ROOT / "out" / "pipeline" / MODEL_NAME


def add_args(p: argparse.ArgumentParser) -> None:
    """Flags of `dogbooth pipeline` (its --model is the base model, as for `train`)."""
    p.add_argument("--instance-dir", type=Path, help="folder of instance images (default: generated dataset)")
    p.add_argument("--steps", type=int, help="training steps (default: the profile's training config)")
    p.add_argument(
        "--threshold",
        type=float,
        help="deploy only when the validation score reaches this (default: per scorer, see score.py)",
    )
    p.add_argument(
        "--scorer",
        help=f"subject (figures, offline; local default), pixels (offline; cluster default {DEFAULT_SCORER}) "
        "or clip:<hub id> (docs/pipeline.md, docs/training.md)",
    )
    p.add_argument("--output", type=Path, help=f"local export directory (default {DEFAULT_OUTPUT})")
    p.add_argument("--method", choices=["full", "lora"], help="full: roll the service onto the export; "
                   "lora: publish it to the adapter store instead (default: the training config's)")  # fmt: skip
    p.add_argument("--adapter-id", help=f"local, --method lora: the adapter's id in the store (default {MODEL_NAME})")
    p.add_argument("--output-name", default=MODEL_NAME, help="cluster: export name on the model volume")
    p.add_argument("--hub-repo", default="", help="cluster with per-worker caches (eks): Hub repo to serve from")
    p.add_argument("--no-compare-base", action="store_true", help="skip scoring the base model too")
    p.add_argument("--dry-run", action="store_true", help="cluster: print the Workflow and submit nothing")
    p.add_argument("--no-follow", action="store_true", help="cluster: submit and return at once")


def _training_config(profile: Profile) -> Path:
    if not profile.training_config:
        raise ProfileError(f"{profile.source}: training_config: missing; name a training/configs/*.yaml file")
    return REPO_ROOT / profile.training_config


def _scorer(profile: Profile, a: argparse.Namespace) -> str:
    """Local profiles gate on the figures (training/figures.py); a cluster's Argo steps on `pixels` or CLIP."""
    return a.scorer or (LOCAL_SCORER if profile.platform == "local" else DEFAULT_SCORER)


def _threshold(a: argparse.Namespace, scorer: str) -> float:
    return a.threshold if a.threshold is not None else default_threshold(scorer)


def run(profile: Profile, a: argparse.Namespace) -> None:
    if profile.platform != "local":
        return _run_cluster(profile, a)

    adapter_id = a.adapter_id or MODEL_NAME
    check_adapter_id(adapter_id)  # before prepare, train and validate spend their time
    params = steps.Params(
        training_config=_training_config(profile),
        output_dir=(a.output or DEFAULT_OUTPUT).resolve(),
        base_model=a.model,
        instance_dir=a.instance_dir.resolve() if a.instance_dir else None,
        steps=a.steps,
        threshold=_threshold(a, _scorer(profile, a)),
        scorer=_scorer(profile, a),
        compare_base=not a.no_compare_base,
        method=a.method,
        adapter_id=adapter_id,
    )
    if a.dry_run:
        print(f"profile {profile.name} is platform local: the steps run in this process; would run {params}")
        return
    result = local.run(profile, params)
    print(f"validation score: {result.report.score:.4f} (threshold {params.threshold:.4f}, scorer {params.scorer})")
    print(f"model: {result.export_dir}")
    if result.adapter_id:  # published, not rolled: the curl that uses it is the last line
        print(f"adapter {result.adapter_id} published to {result.endpoint_or_store}")
        print(f"try it: {result.curl}", flush=True)
        return
    print(f"stop it with: nox -s down -- --profile {a.profile}")
    print(f"endpoint: {result.endpoint}", flush=True)


def _run_cluster(profile: Profile, a: argparse.Namespace) -> None:
    request = argo.SubmitRequest(
        base_model=a.model,
        instance_dir=str(a.instance_dir) if a.instance_dir else None,
        steps=a.steps,
        threshold=_threshold(a, _scorer(profile, a)),
        scorer=_scorer(profile, a),
        output_name=a.output_name,
        hub_repo=a.hub_repo,
    )
    workflow = argo.workflow(profile, request)
    if a.dry_run:
        print(argo.to_yaml(workflow), end="", flush=True)
        return
    name = argo_submit.submit(profile, workflow, follow=not a.no_follow)
    print(f"workflow: {name}", flush=True)
