"""The recipe's typed config: one YAML file per target (`training/configs/*.yaml`), each knob commented.

Command-line flags override single keys (`--max-train-steps`, `--output`, ...) and the result is
validated again, so a flag gets the same checks as the file and errors name the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from dogbooth.core.model import Strict
from dogbooth.core.names import MODEL_NAME
from dogbooth.core.yamlfile import describe, read_mapping
from training.errors import TrainingConfigError

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class DataConfig(Strict):
    instance_dir: str | None = Field(None, description="folder of instance images; null = generated dataset")
    instance_prompt: str = Field("a photo of sks object", min_length=1)
    synthetic_images: int = Field(8, ge=1, le=256, description="size of the generated dataset")
    min_side: int | None = Field(None, ge=8, description="reject smaller images; null = the resolution")
    center_crop: bool = True
    random_flip: bool = False


class PriorConfig(Strict):
    enabled: bool = False
    class_prompt: str = Field("a photo of an object", min_length=1)
    class_dir: str | None = Field(None, description="class images; null = <output>/class-images")
    num_class_images: int = Field(100, ge=1)
    loss_weight: float = Field(1.0, ge=0)
    sample_batch_size: int = Field(4, ge=1)
    sample_steps: int = Field(25, ge=1, le=150)


class ModelConfig(Strict):
    base_model: str = Field("tiny", description="a services.models reference")
    method: Literal["full", "lora"] = "lora"
    lora_rank: int = Field(4, ge=1, le=256)
    lora_alpha: int | None = Field(None, ge=1, description="null = lora_rank (scale 1)")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"],
        min_length=1,
        description="UNet module names that get adapters; the default is diffusers' DreamBooth LoRA set",
    )
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    attention: Literal["sdpa", "eager"] = "sdpa"


class OptimizerConfig(Strict):
    learning_rate: float = Field(1e-4, gt=0)
    scale_lr: bool = False
    use_8bit_adam: bool = False
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(1e-2, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)


class TrainConfig(Strict):
    seed: int = Field(0, ge=0)
    resolution: int = Field(512, ge=8, multiple_of=8)
    batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_train_steps: int = Field(400, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = every core")


class CheckpointConfig(Strict):
    every_n_steps: int = Field(100, ge=1)
    keep_last: int = Field(2, ge=1)


class ValidationConfig(Strict):
    every_n_steps: int = Field(100, ge=1)
    prompts: list[str] = Field(default_factory=lambda: ["a photo of sks object"], min_length=1)
    num_inference_steps: int = Field(25, ge=1, le=150)
    guidance: float = Field(7.5, ge=0, le=30)
    seed: int = 0


class FiguresConfig(Strict):
    """Samples for subject_fidelity / class_leakage / specificity (training/figures.py)."""

    enabled: bool = True
    samples: int = Field(8, ge=1, le=64, description="seeds per prompt, the same for both prompts")
    seed: int = Field(1000, ge=0)
    num_inference_steps: int = Field(20, ge=1, le=150)
    guidance: float = Field(1.0, ge=0, le=30)
    grid: int = Field(8, ge=2, description="the scorer compares images reduced to grid x grid pixels")


class ExportConfig(Strict):
    output_dir: str = Field(f"out/{MODEL_NAME}", min_length=1)
    hub_repo: str | None = Field(None, description="org/name to push to with HF_TOKEN; null = no push")
    hub_private: bool = True


class RecipeConfig(Strict):
    data: DataConfig = DataConfig()
    prior: PriorConfig = PriorConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    validation: ValidationConfig = ValidationConfig()
    figures: FiguresConfig = FiguresConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RecipeConfig:
        if self.train.device == "cpu" and self.train.mixed_precision == "fp16":
            raise ValueError("train.mixed_precision fp16 needs a GPU; use no or bf16 on cpu")
        return self


# Flags of `python -m training` / `dogbooth train` and the keys they set.
OVERRIDES: dict[str, tuple[str, str]] = {
    "instance_dir": ("data", "instance_dir"),
    "instance_prompt": ("data", "instance_prompt"),
    "base_model": ("model", "base_model"),
    "method": ("model", "method"),
    "max_train_steps": ("train", "max_train_steps"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "output": ("export", "output_dir"),
    "checkpoint_every": ("checkpoint", "every_n_steps"),
    "validate_every": ("validation", "every_n_steps"),
    "hub_repo": ("export", "hub_repo"),
    "prior_enabled": ("prior", "enabled"),
}


def resolve_path(name: str | Path) -> Path:
    """A config by file path, or by name in training/configs (`local` -> training/configs/local.yaml)."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"}:
        return path
    candidate = CONFIGS_DIR / f"{name}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
        raise TrainingConfigError(f"no training config {name!r} in {CONFIGS_DIR}; available: {known}")
    return candidate


def load(name: str | Path, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Load and validate a config, then apply flag overrides (None values are ignored)."""
    path = resolve_path(name)
    data = read_mapping(path, TrainingConfigError, empty_ok=True)
    try:
        config = RecipeConfig.model_validate(data)
    except ValidationError as e:
        raise TrainingConfigError(describe(path, e)) from e
    return with_overrides(config, overrides or {})


def with_overrides(config: RecipeConfig, overrides: dict[str, Any]) -> RecipeConfig:
    data = config.model_dump()
    for flag, value in overrides.items():
        if value is None:
            continue
        if flag not in OVERRIDES:
            raise TrainingConfigError(f"unknown override {flag!r}; known: {', '.join(OVERRIDES)}")
        section, key = OVERRIDES[flag]
        data[section][key] = str(value) if isinstance(value, Path) else value
    try:
        return RecipeConfig.model_validate(data)
    except ValidationError as e:
        raise TrainingConfigError(describe("command line", e)) from e
