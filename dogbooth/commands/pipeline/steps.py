"""The fine-tune pipeline's steps as plain functions: prepare -> train -> validate -> gate -> deploy.

The same functions run in-process for `--profile local` (dogbooth/commands/pipeline/local.py) and, one per
container, in the Argo WorkflowTemplate `dogbooth-finetune` (`python -m dogbooth.commands.pipeline <step>`).
Every artifact sits beside the export: `<output>.work/pipeline/` (prepared instance images, validation
images and grid, validation.json), so on a cluster it all lands on the model volume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dogbooth.commands.pipeline.score import embedder, fidelity
from dogbooth.core.errors import DogboothError
from dogbooth.settings.gate import DEFAULT_SCORER, FIDELITY_GAIN, SUBJECT_SCORER, default_threshold
from services.models import load_pipeline
from training import config as config_mod
from training import figures
from training.checkpoints import work_dir_for
from training.config import RecipeConfig
from training.data import image_files, load_folder, write_synthetic_dataset
from training.run import run
from training.validation import grid, validation_images

log = logging.getLogger("dogbooth.commands.pipeline")

REPORT = "validation.json"


class PipelineInputError(DogboothError):
    """A pipeline parameter is missing or does not fit the cluster; the message says which."""


class GateFailed(DogboothError):
    """The validation score is below the threshold: the model is not deployed."""


@dataclass(frozen=True)
class Params:
    """One pipeline run. None keeps the training config's value (base model, data, steps)."""

    training_config: str | Path
    output_dir: Path
    base_model: str | None = None
    instance_dir: Path | None = None
    steps: int | None = None
    threshold: float = default_threshold(DEFAULT_SCORER)
    scorer: str = DEFAULT_SCORER
    method: str | None = None  # full | lora; None = the config's
    adapter_id: str | None = None  # lora: the id it is published under in the profile's adapter store
    hub_repo: str | None = None  # push the export (served from the Hub where caches are per worker)
    compare_base: bool = True  # also score the base model: shows what the fine-tune gained


@dataclass(frozen=True)
class Prepared:
    instance_dir: Path
    count: int
    config: RecipeConfig


@dataclass
class ValidationReport:
    score: float
    scorer: str
    prompts: list[str]
    images: list[str]
    grid: str
    base_score: float | None = None
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] | None = None  # scorer `subject`: training/figures.py measure(); score = specificity

    def describe(self) -> str:
        base = f" (base model: {self.base_score:.4f})" if self.base_score is not None else ""
        text = f"validation score ({self.scorer}): {self.score:.4f}{base}; grid: {self.grid}"
        return f"{figures.describe(self.figures)}\n{text}" if self.figures else text


def pipeline_dir(output_dir: Path) -> Path:
    return work_dir_for(output_dir) / "pipeline"


def recipe_config(params: Params, instance_dir: Path | None = None) -> RecipeConfig:
    overrides = {
        "base_model": params.base_model,
        "instance_dir": instance_dir or params.instance_dir,
        "max_train_steps": params.steps,
        "output": params.output_dir,
        "method": params.method,
        "hub_repo": params.hub_repo,
    }
    return config_mod.load(params.training_config, overrides)


def prepare(params: Params) -> Prepared:
    """Check the instance images (or generate the offline dataset) and stage them, sized, on the volume."""

    cfg = recipe_config(params)
    res, target = cfg.train.resolution, pipeline_dir(params.output_dir) / "instance"
    if cfg.data.instance_dir:
        source = Path(cfg.data.instance_dir).expanduser()
    else:
        source = write_synthetic_dataset(
            work_dir_for(params.output_dir) / "instance-images", cfg.data.synthetic_images, res
        )
    images = load_folder(source, res, min_side=cfg.data.min_side, center_crop=cfg.data.center_crop)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".instance-", dir=target.parent))
    for i, image in enumerate(images):
        image.save(staging / f"instance-{i:03d}.png")
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    log.info("prepare: %d instance image(s) from %s staged at %d px in %s", len(images), source, res, target)
    return Prepared(target, len(images), recipe_config(params, target))


def staged(params: Params) -> Prepared:
    """What an earlier `prepare` left on the volume (the Argo steps run in separate containers)."""

    folder = pipeline_dir(params.output_dir) / "instance"
    if not folder.is_dir():
        raise PipelineInputError(f"{folder}: no staged instance images; the prepare step must run first")
    return Prepared(folder, len(image_files(folder)), recipe_config(params, folder))


def train(prepared: Prepared, *, resume: str | None = None) -> Path:
    """Fine-tune with the training recipe; returns the export directory.

    In-process runs start fresh (resume None): an earlier run's checkpoints may hold other data or
    another base. The Argo step passes `latest`, so a retried pod continues its own run.
    """

    summary = run(prepared.config, resume=resume)
    log.info("train: %s", summary.describe().replace("\n", "; "))
    return summary.export_dir


def _load(model: str) -> Any:
    import torch

    pipe = load_pipeline(model)
    return pipe.to("cuda") if torch.cuda.is_available() else pipe


def _generate(model: str, cfg: RecipeConfig) -> list[Any]:
    return validation_images(_load(model), cfg)


def validate(
    export_dir: Path,
    instance_dir: Path,
    cfg: RecipeConfig,
    *,
    scorer: str = DEFAULT_SCORER,
    compare_base: bool = True,
) -> ValidationReport:
    """Images for the validation prompts, a grid, and the subject-fidelity score against the instances."""

    if scorer == SUBJECT_SCORER:
        return _validate_figures(export_dir, instance_dir, cfg, compare_base=compare_base)
    embed = embedder(scorer)  # an unknown scorer fails before seconds of generation
    instances = load_folder(instance_dir, cfg.train.resolution)
    images = _generate(str(export_dir), cfg)
    out = pipeline_dir(export_dir) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        image.save(out / f"prompt-{i:02d}.png")
        paths.append(str(out / f"prompt-{i:02d}.png"))
    grid(images, columns=min(4, len(images))).save(out / "grid.png")
    report = ValidationReport(
        score=fidelity(images, instances, embed),
        scorer=scorer,
        prompts=list(cfg.validation.prompts),
        images=paths,
        grid=str(out / "grid.png"),
        model=str(export_dir),
    )
    if compare_base:
        report.base_score = fidelity(_generate(cfg.model.base_model, cfg), instances, embed)
    return _write_report(export_dir, report)


def _validate_figures(
    export_dir: Path, instance_dir: Path, cfg: RecipeConfig, *, compare_base: bool
) -> ValidationReport:
    """Scorer `subject`: the export's figures (and the base model's, to see what the fine-tune gained)."""

    scorer = figures.SubjectScorer(load_folder(instance_dir, cfg.train.resolution), cfg.figures.grid)
    after = figures.draw(_load(str(export_dir)), cfg)
    before = figures.draw(_load(cfg.model.base_model), cfg) if compare_base else None
    measured = figures.measure(scorer, after, before)
    out = pipeline_dir(export_dir) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    figures.grid_image(before, after).save(out / "grid.png")
    report = ValidationReport(
        score=measured["specificity"],
        scorer=SUBJECT_SCORER,
        prompts=[cfg.data.instance_prompt, cfg.prior.class_prompt],
        images=[],
        grid=str(out / "grid.png"),
        base_score=measured["subject_fidelity"]["before"],
        model=str(export_dir),
        figures=measured,
    )
    return _write_report(export_dir, report)


def _write_report(export_dir: Path, report: ValidationReport) -> ValidationReport:
    path = pipeline_dir(export_dir) / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(report), indent=2) + "\n")
    tmp.replace(path)
    log.info("validate: %s", report.describe().replace("\n", "; "))
    return report


def gate(score: float, threshold: float) -> None:
    """Raise GateFailed when `score` is below `threshold`."""
    if score < threshold:
        raise GateFailed(
            f"validation score {score:.4f} is below the threshold {threshold:.4f}: not deploying "
            "(look at the validation grid; train longer, add images, or lower --threshold)"
        )
    log.info("gate: score %.4f >= threshold %.4f, deploying", score, threshold)


def gate_report(report: ValidationReport, threshold: float) -> None:
    """`gate` on the report's score; with figures of the base too, subject_fidelity must also have risen."""
    if report.figures and report.figures["subject_fidelity"]["before"] is not None:
        fidelity = report.figures["subject_fidelity"]
        if fidelity["after"] <= fidelity["before"] or fidelity["after"] < FIDELITY_GAIN * fidelity["before"]:
            raise GateFailed(
                f"subject_fidelity {fidelity['after']:.4f} is under {FIDELITY_GAIN:g}x the base model's "
                f"{fidelity['before']:.4f}: the fine-tune did not learn the subject; not deploying "
                "(look at the validation grid; an export without weights serves the base model)"
            )
    gate(report.score, threshold)
