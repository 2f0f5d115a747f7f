"""`python -m dogbooth train --profile P`: local profiles train in-process, cluster profiles submit a Job."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from dogbooth.core.names import MODEL_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import trainjob as cluster
from dogbooth.settings.profiles import Profile
from services.adapters import ADAPTER_ID, store_dir
from training import config as config_mod
from training.cli import add_run_args, overrides
from training.errors import TrainingError
from training.run import run

log = logging.getLogger("dogbooth.training")


def add_args(p: argparse.ArgumentParser) -> None:
    """Flags of `dogbooth train` beyond the common profile ones (its --model is the base model)."""
    add_run_args(p, base_model_flag=False)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config (local) or the rendered Job (cluster) and stop",
    )
    p.add_argument("--no-follow", action="store_true", help="cluster: submit the Job and return at once")
    p.add_argument("--image", help="cluster: repository:tag instead of the profile's chart.image")
    p.add_argument(
        "--adapter-id",
        help="local, --method lora: publish the export into the profile's adapter store under this id "
        "(served as adapter=ID at once; docs/adapters.md)",
    )


def check_adapter_id(adapter_id: str) -> None:
    """Refuses an `--adapter-id` the store cannot hold (`train` and `pipeline` check before any work)."""
    if not ADAPTER_ID.match(adapter_id):
        raise TrainingError(f"--adapter-id {adapter_id!r}: use 1-63 of a-z, 0-9 and -, starting with a letter or digit")


def adapter_output(profile: Profile, adapter_id: str, method: str, output: Path | None) -> Path:
    """Where `--adapter-id` puts the export: `<store>/<id>`, which the serving replicas read."""
    check_adapter_id(adapter_id)
    if method != "lora":
        raise TrainingError(f"--adapter-id needs --method lora (the training config says {method}); adapters are LoRA")
    if output is not None:
        raise TrainingError("give --adapter-id or --output, not both: --adapter-id writes into the adapter store")
    return store_dir(profile.serve.app) / adapter_id


def _flags(a: argparse.Namespace) -> dict[str, Any]:
    flags = overrides(a)
    flags["base_model"] = a.model
    return flags


def _config_for(profile: Profile) -> Path:
    if not profile.training_config:
        raise TrainingError(f"{profile.source}: training_config: missing; name a training/configs/*.yaml file")
    return REPO_ROOT / profile.training_config


def train(profile: Profile, a: argparse.Namespace) -> None:
    if profile.platform == "local":
        return _train_here(profile, a)
    _train_in_cluster(profile, a)


def _train_here(profile: Profile, a: argparse.Namespace) -> None:
    cfg = config_mod.load(_config_for(profile), _flags(a))
    if a.adapter_id:
        # The export is staged beside the target and renamed into place (training/export.py): never half-written.
        target = adapter_output(profile, a.adapter_id, cfg.model.method, a.output)
        cfg = config_mod.with_overrides(cfg, {"output": target})
    if a.dry_run:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="", flush=True)
        return
    summary = run(cfg, resume=a.resume)
    print(summary.describe(), flush=True)


def _train_in_cluster(profile: Profile, a: argparse.Namespace) -> None:
    if a.adapter_id:
        raise TrainingError("--adapter-id: only local profiles publish to the store for now; train with --output")
    flags = _flags(a)
    output_name = a.output.name if a.output else MODEL_NAME
    request = cluster.JobRequest(
        output_name=output_name,
        hub_repo=a.hub_repo,
        flags=flags,
        image=a.image,
        instance_dir=str(a.instance_dir) if a.instance_dir else None,
    )
    if a.resume not in (None, "latest"):
        raise TrainingError("--resume: the Job always resumes from the newest checkpoint on its volume (latest)")
    objects = cluster.render_job(profile, request)
    if a.dry_run:
        print(cluster.to_yaml(objects), end="", flush=True)
        return
    name = cluster.submit(profile, objects, follow=not a.no_follow)
    print(f"training job: {name}", flush=True)
