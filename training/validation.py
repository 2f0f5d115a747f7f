"""Validation: the model's current images for the validation prompts, saved as one grid PNG per call."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.config import RecipeConfig
    from training.state import TrainedModules

log = logging.getLogger("dogbooth.training.validation")


def grid(images: list[Any], columns: int) -> Any:
    from PIL import Image

    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (w * columns, h * rows), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * w, (i // columns) * h))
    return sheet


def validation_images(pipe: Any, cfg: RecipeConfig) -> list[Any]:
    """One image per validation prompt, seeded per prompt, so any two sets compare image by image.

    Used for the training grids and by the pipeline's validate step alike.
    """
    import torch

    v, res = cfg.validation, cfg.train.resolution
    images = []
    with torch.inference_mode():
        for i, prompt in enumerate(v.prompts):
            generator = torch.Generator(device="cpu").manual_seed(v.seed + i)
            out = pipe(
                prompt=prompt,
                num_inference_steps=v.num_inference_steps,
                guidance_scale=v.guidance,
                height=res,
                width=res,
                generator=generator,
                output_type="pil",
            )
            images.append(out.images[0])
    return images


@contextmanager
def evaluating(modules: TrainedModules) -> Iterator[None]:
    """The trained modules in eval mode (and autocast) for sampling mid-run, back in train mode after."""
    for module in modules.all():
        module.eval()
    try:
        with modules.autocast():
            yield
    finally:
        for module in modules.all():
            module.train()


def save_grid(pipe: Any, modules: TrainedModules, cfg: RecipeConfig, path: Path) -> Path:
    """The validation images of the pipeline's current weights (`modules` being trained) as one grid PNG."""
    pipe.set_progress_bar_config(disable=True)
    with evaluating(modules):
        images = validation_images(pipe, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    grid(images, columns=min(4, len(images))).save(tmp, format="PNG")
    os.replace(tmp, path)
    log.info("validation grid %s", path)
    return path
