"""The figures that show a fine-tune learns (training/figures.py), the `toy` codec they rely on, and the
pipeline gate built on them refusing broken runs: real (short) training runs, no mocks.

Whether a full-length run meets the goals is measured by `nox -s train` / `nox -s pipeline` and written
up in docs/training.md; these tests pin what must hold at any length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from dogbooth.commands.pipeline import steps
from dogbooth.settings.gate import SUBJECT_SCORER, default_threshold
from services import generated
from services.models import load_pipeline
from training import config as config_mod
from training import figures
from training.config import RecipeConfig
from training.data import SUBJECT_COLOURS, synthetic_images, to_tensor
from training.run import run

INSTANCE, CLASS = "a photo of sks object", "a photo of an object"


def short_config(**sections: dict[str, object]) -> RecipeConfig:
    """The local config cut to the fewest steps and samples that still exercise every part."""
    data = config_mod.load("local").model_dump()
    data["train"].update(max_train_steps=2, batch_size=2)
    data["prior"].update(num_class_images=2, sample_steps=2)
    data["figures"].update(samples=2, num_inference_steps=3)
    data["validation"].update(every_n_steps=1000, num_inference_steps=2)
    for section, keys in sections.items():
        data[section].update(keys)
    return RecipeConfig.model_validate(data)


def write_config(directory: Path, cfg: RecipeConfig) -> Path:
    path = directory / "training.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    return path


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_toy_codec_is_exact_8x_pooling() -> None:
    vae = generated.build_pipeline(generated.TOY).vae
    x = torch.stack([to_tensor(im) for im in synthetic_images(4, 64, seed=3)])
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.sample()
        decoded = vae.decode(latents).sample
    pooled = torch.nn.functional.avg_pool2d(x, 8)
    torch.testing.assert_close(latents[:, :3], pooled, atol=0.01, rtol=0)
    torch.testing.assert_close(decoded, torch.nn.functional.interpolate(pooled, scale_factor=8), atol=0.01, rtol=0)


def test_scorer_finds_the_subject_and_nothing_else() -> None:
    instances = synthetic_images(8, 64)
    scorer = figures.SubjectScorer(instances)
    bins = {int(figures._bins(np.array(c))) for c in SUBJECT_COLOURS}
    assert set(scorer.palette.tolist()) == bins  # the grey backgrounds vary, so they drop out
    assert scorer.mean(instances) == 1.0
    unseen = scorer.mean(synthetic_images(8, 64, seed=5))  # the same subject at other places and greys
    rng = np.random.default_rng(0)
    noise = scorer.similarity(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    grey = scorer.similarity(Image.new("RGB", (64, 64), (128, 128, 128)))
    magenta = scorer.similarity(Image.new("RGB", (64, 64), SUBJECT_COLOURS[0]))  # the colour, not the pattern
    assert 0.85 < unseen < 1.0 and noise == grey == 0.0
    assert 0.2 < magenta < 0.6, magenta
    with pytest.raises(figures.FiguresError, match="share no colour"):
        figures.SubjectScorer([Image.new("RGB", (64, 64), (10, 10, 10)), Image.new("RGB", (64, 64), (240, 240, 240))])


def test_figures_and_their_grid() -> None:
    instances = synthetic_images(8, 64)
    other = synthetic_images(4, 64, seed=9)
    grey = [Image.new("RGB", (64, 64), (128, 128, 128))] * 4
    scorer = figures.SubjectScorer(instances)
    measured = figures.measure(scorer, figures.Samples(other, grey), figures.Samples(grey, grey))
    assert measured["subject_fidelity"]["before"] == 0.0 and measured["class_leakage"] == {"before": 0.0, "after": 0.0}
    assert measured["specificity"] == measured["subject_fidelity"]["after"] > 0.85
    same = figures.measure(scorer, figures.Samples(other, other))  # both prompts give the same images
    assert same["specificity"] == 0.0 and same["subject_fidelity"]["before"] is None
    assert "subject_fidelity: 0.000 ->" in figures.describe(measured)
    assert figures.grid_image(figures.Samples(grey, grey), figures.Samples(other, grey)).size == (4 * 64, 4 * 64)


def test_the_prompt_reaches_the_unet_of_the_intact_base() -> None:
    """The contrast to the broken run below: the same seeds, two prompts, different images."""
    cfg = short_config()
    drawn = figures.draw(load_pipeline("toy"), cfg)
    assert not np.array_equal(pixels(drawn.instance), pixels(drawn.klass))


def test_gate_refuses_a_run_whose_prompt_never_reaches_the_text_encoder(tmp_path: Path) -> None:
    """(a) A tokenizer that truncates every prompt to its start and end tokens: both prompts are one."""
    broken = load_pipeline("toy")
    broken.tokenizer.model_max_length = 2  # what a bad tokenizer config does: "a photo of ..." never gets in
    broken.save_pretrained(str(tmp_path / "broken-base"))
    cfg = short_config(model={"base_model": str(tmp_path / "broken-base")})
    params = steps.Params(training_config=write_config(tmp_path, cfg), output_dir=tmp_path / "model")
    prepared = steps.prepare(params)
    export = steps.train(prepared)
    report = steps.validate(export, prepared.instance_dir, prepared.config, scorer=SUBJECT_SCORER)
    after = figures.draw(load_pipeline(str(export)), prepared.config)
    assert np.array_equal(pixels(after.instance), pixels(after.klass))  # the signature of a dead text path
    assert report.figures is not None and report.figures["specificity"] == 0.0
    with pytest.raises(steps.GateFailed, match="not deploying"):
        steps.gate_report(report, default_threshold(SUBJECT_SCORER))


def test_gate_refuses_a_lora_export_that_saves_no_weights(tmp_path: Path) -> None:
    """(b) A real LoRA run whose export holds only zeros: the served model is the base, image for image."""
    cfg = short_config(model={"method": "lora"})
    params = steps.Params(training_config=write_config(tmp_path, cfg), output_dir=tmp_path / "model")
    prepared = steps.prepare(params)
    export = steps.train(prepared)
    weights = export / "pytorch_lora_weights.safetensors"
    trained = load_file(str(weights))
    assert any(t.abs().sum() > 0 for t in trained.values())
    save_file({k: torch.zeros_like(t) for k, t in trained.items()}, str(weights))
    report = steps.validate(export, prepared.instance_dir, prepared.config, scorer=SUBJECT_SCORER)
    base = figures.draw(load_pipeline("toy"), prepared.config)
    after = figures.draw(load_pipeline(str(export)), prepared.config)
    assert np.array_equal(pixels(after.instance), pixels(base.instance))
    assert report.figures is not None
    fidelity = report.figures["subject_fidelity"]
    assert fidelity["after"] == fidelity["before"]
    with pytest.raises(steps.GateFailed, match="subject_fidelity .* the fine-tune did not learn the subject"):
        steps.gate_report(report, threshold=-1.0)  # refused on the fidelity check alone


def test_a_lora_export_serves_what_was_trained(tmp_path: Path) -> None:
    """The local LoRA (convolutions too, alpha 4x rank) through the serving loader draws what training drew.

    The after-row of the run's own grid was drawn by the in-memory adapters; an export that lost keys or
    its scale once drew something else here (docs/training.md, lesson 6).
    """
    cfg = short_config(model={"method": "lora"}, train={"max_train_steps": 10, "batch_size": 2})
    cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"output_dir": str(tmp_path / "lora")})})
    summary = run(cfg)
    sheet = np.asarray(Image.open(summary.export_dir / figures.GRID_FILE), dtype=np.int16)
    side = cfg.train.resolution
    base_row, trained_row = sheet[:side], sheet[2 * side : 3 * side]
    served = figures.draw(load_pipeline(str(summary.export_dir)), cfg)
    served_row = np.concatenate([np.asarray(im, dtype=np.int16) for im in served.instance], axis=1)
    assert np.abs(trained_row - base_row).mean() > 5  # ten steps moved the samples
    assert np.abs(served_row - trained_row).mean() < 1  # and the served adapter moves them the same way
