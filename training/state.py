"""What the recipe hands its helpers (loss, validation, export): only the pieces they use, by name.

The recipe builds these once its modules are prepared; the helpers never see the recipe itself, so
they stay below it in the import graph.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    steps: int
    losses: list[float]
    seconds_per_step: float
    resumed_from: int
    figures: dict[str, Any] | None = None  # training/figures.py measure(); None when figures.enabled is off
    grid: Any = None  # the before/after PIL image that goes into the export beside the manifest


# eq=False on the classes below: their fields are modules and tensors, which have no useful equality.
@dataclass(frozen=True, eq=False)
class TrainedModules:
    """The modules being fine-tuned, as accelerate prepared them, and the accelerator calls around them."""

    unet: Any
    text_encoder: Any | None  # None when the text encoder is frozen
    unwrap: Callable[[Any], Any]  # the plain module under accelerate's wrapper, for saving
    autocast: Callable[[], AbstractContextManager[Any]]

    def all(self) -> list[Any]:
        return [self.unet] + ([self.text_encoder] if self.text_encoder is not None else [])


@dataclass(frozen=True, eq=False)
class CachedImages:
    """One image set encoded once before training: its VAE posteriors and its prompt."""

    latents: Any  # [variant, image, (mean|std), C, H, W] on the CPU
    ids: Any  # the prompt's token ids
    embeds: Any | None  # the prompt's embedding; None when the text encoder trains, so it changes each step


@dataclass(frozen=True, eq=False)
class LossInputs:
    """Everything `training.batches.diffusion_loss` reads."""

    modules: TrainedModules
    noise_scheduler: Any
    vae_scaling: float
    instance: CachedImages
    prior: CachedImages | None  # None without prior preservation
    device: Any
    weight_dtype: Any
    seed: int
    batch_size: int
    prior_loss_weight: float
