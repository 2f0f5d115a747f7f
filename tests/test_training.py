"""The DreamBooth recipe on the tiny model at 64 px on the CPU: real training steps, real checkpoints.

Runs are shared through module fixtures so the whole file stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from training import checkpoints
from training import config as config_mod
from training.checkpoints import work_dir_for
from training.cli import overrides, parser
from training.config import RecipeConfig
from training.figures import GRID_FILE
from training.recipe import DreamBoothRecipe
from training.run import run

STEPS = 30


# The smoke variant of the local config the figures below were measured on: the tiny base (what the test
# stack serves, so adapters trained here load there), no prior, no figures, the earlier optimizer.
SMOKE = {
    "model": {
        "base_model": "tiny",
        "lora_rank": 4,
        "lora_alpha": None,
        "lora_targets": ["to_k", "to_q", "to_v", "to_out.0"],
    },
    "prior": {"enabled": False},
    "figures": {"enabled": False},
    "optimizer": {"learning_rate": 1e-3, "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 5},
    "train": {"batch_size": 4},
}


def make_config(output: Path, **keys: Any) -> RecipeConfig:
    """The smoke config with one short validation; `section__key=value` overrides any key."""
    data = config_mod.load("local").model_dump()
    for section, values in SMOKE.items():
        data[section].update(values)
    data["validation"].update(prompts=["a photo of sks object"], num_inference_steps=2, every_n_steps=1000)
    data["export"]["output_dir"] = str(output)
    for name, value in keys.items():
        section, key = name.split("__")
        data[section][key] = value
    return RecipeConfig.model_validate(data)


def unet_weights(export_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(export_dir / "unet" / "diffusion_pytorch_model.safetensors"))


class Interrupt(Exception):
    pass


def train_until(cfg: RecipeConfig, stop_at: int, resume: str | None = None) -> None:
    """Run the recipe and crash it (like a kill) once `stop_at` steps are done."""
    recipe = DreamBoothRecipe(cfg, resume=resume)
    recipe.setup()
    real_step = recipe._optimizer_step

    def step() -> float:
        if recipe.step == stop_at:
            raise Interrupt
        return real_step()

    recipe._optimizer_step = step  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        recipe.train()
    recipe.cleanup()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 30-step full fine-tune on the generated dataset."""
    out = tmp_path_factory.mktemp("full") / "model"
    run(make_config(out, train__max_train_steps=STEPS, checkpoint__every_n_steps=10))
    return out


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, killed at step 17 (after the step-10 checkpoint), then resumed with --resume latest."""
    out = tmp_path_factory.mktemp("resumed") / "model"
    cfg = make_config(out, train__max_train_steps=STEPS, checkpoint__every_n_steps=10)
    train_until(cfg, stop_at=17)
    assert [c.step for c in checkpoints.complete_checkpoints(work_dir_for(out))] == [10]
    run(cfg, resume="latest")
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LoRA on UNet and text encoder, with prior preservation, accumulation, flips, 8-bit Adam asked for."""
    out = tmp_path_factory.mktemp("lora") / "model"
    cfg = make_config(
        out, model__method="lora", model__train_text_encoder=True, model__gradient_checkpointing=True,
        prior__enabled=True, prior__num_class_images=3, prior__sample_steps=2, train__max_train_steps=3,
        train__gradient_accumulation_steps=2, data__random_flip=True, optimizer__use_8bit_adam=True,
        figures__enabled=True, figures__samples=2, figures__num_inference_steps=2,
    )  # fmt: skip
    run(cfg)
    return out


def test_every_config_validates() -> None:
    for path in sorted(config_mod.CONFIGS_DIR.glob("*.yaml")):
        cfg = config_mod.load(path)
        assert cfg.train.max_train_steps > 0, path
    gpu = config_mod.load("a10g")
    assert (gpu.model.method, gpu.optimizer.use_8bit_adam, gpu.model.gradient_checkpointing) == (
        "lora",
        True,
        True,
    )


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  resolution: 65\n  bogus: 1\n")
    with pytest.raises(config_mod.TrainingConfigError) as e:
        config_mod.load(bad)
    assert f"{bad}: train.resolution" in str(e.value) and "train.bogus" in str(e.value)
    with pytest.raises(config_mod.TrainingConfigError, match="command line: train.max_train_steps"):
        config_mod.load("local", {"max_train_steps": 0})


def test_no_prior_preservation_flag_turns_the_prior_off() -> None:
    assert config_mod.load("local").prior.enabled  # the local default, measured in docs/training.md
    args = parser().parse_args(["--no-prior-preservation"])
    assert not config_mod.load("local", overrides(args)).prior.enabled
    assert config_mod.load("local", overrides(parser().parse_args([]))).prior.enabled


def test_loss_drops_on_generated_dataset(full_run: Path) -> None:
    manifest = json.loads((full_run / "dogbooth-training.json").read_text())
    assert manifest["steps"] == STEPS and manifest["export"] == "full" and manifest["base_model"] == "tiny"
    # Measured over train seeds 0-4: final/initial = 0.34-0.41. Asserting < 0.7 leaves a wide margin.
    assert manifest["final_loss"] < 0.7 * manifest["initial_loss"], manifest
    assert manifest["seconds_per_step"] > 0
    assert (work_dir_for(full_run) / "validation" / f"step-{STEPS:06d}.png").is_file()


def test_resume_matches_uninterrupted_run(full_run: Path, resumed_run: Path) -> None:
    a, b = unet_weights(full_run), unet_weights(resumed_run)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    ma = json.loads((full_run / "dogbooth-training.json").read_text())
    mb = json.loads((resumed_run / "dogbooth-training.json").read_text())
    assert (mb["steps"], mb["resumed_from_step"]) == (STEPS, 10)
    assert mb["final_loss"] == pytest.approx(ma["final_loss"], rel=1e-3)
    assert mb["initial_loss"] == pytest.approx(ma["initial_loss"], rel=1e-3)  # losses survive the restart


def test_damaged_checkpoints_never_break_resume(tmp_path: Path) -> None:
    out = tmp_path / "model"
    cfg = make_config(out, train__max_train_steps=6, checkpoint__every_n_steps=2, checkpoint__keep_last=3)
    train_until(cfg, stop_at=5)
    root = checkpoints.checkpoints_dir(work_dir_for(out))
    assert [c.step for c in checkpoints.complete_checkpoints(work_dir_for(out))] == [2, 4]
    # A save killed mid-write, a directory without its marker, and bit rot in the newest checkpoint.
    partial = root / ".tmp-checkpoint-000006-x"
    shutil.copytree(root / "checkpoint-000004", partial)
    (partial / "optimizer.bin").write_bytes(b"half")
    (root / "checkpoint-000005").mkdir()
    (root / "checkpoint-000005" / "trainable_0.safetensors").write_bytes(b"\0" * 10)
    newest = root / "checkpoint-000004" / "trainable_0.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    assert [c.step for c in checkpoints.complete_checkpoints(work_dir_for(out))] == [2, 4]
    summary = run(cfg, resume="latest")
    assert (summary.manifest["steps"], summary.manifest["resumed_from_step"]) == (6, 2)
    assert all(torch.isfinite(t).all() for t in unet_weights(out).values())


def test_lora_export_with_text_encoder_and_prior(lora_run: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = json.loads((lora_run / "dogbooth-training.json").read_text())
    assert (manifest["export"], manifest["base_model"], manifest["steps"]) == ("lora", "tiny", 3)
    assert manifest["prompts"]["class"] == "a photo of an object"
    figs = manifest["figures"]  # measured before and after, on 2 seeds per prompt
    assert set(figs) >= {"subject_fidelity", "class_leakage", "specificity"} and figs["samples"] == 2
    assert all(0 <= figs[k][when] <= 1 for k in ("subject_fidelity", "class_leakage") for when in ("before", "after"))
    assert figs["specificity"] == pytest.approx(figs["subject_fidelity"]["after"] - figs["class_leakage"]["after"])
    assert Image.open(lora_run / GRID_FILE).size == (2 * 64, 4 * 64)  # seeds x (before, after) x (instance, class)
    assert len(list((work_dir_for(lora_run) / "class-images").glob("class-*.png"))) == 3
    weights = lora_run / "pytorch_lora_weights.safetensors"
    keys = load_file(str(weights)).keys()
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    assert weights.stat().st_size < 200_000
    assert not [p for p in lora_run.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    from services.models import load_pipeline

    with caplog.at_level("WARNING"):
        load_pipeline(str(lora_run))  # the serve path: base model + adapter
    assert not [r for r in caplog.records if "No LoRA keys" in r.getMessage()]
