"""Does the fine-tune learn? Three figures from image statistics, with no learned weights.

The DreamBooth paper (Ruiz et al. 2023) scores subject fidelity with DINO and CLIP-I similarity to the
instance images, prompt fidelity with CLIP-T, and shows that prior preservation keeps the class prompt
from collapsing onto the subject. None of those weights can be downloaded here, so the same questions
are answered with a scorer built from the instance images alone:

- `subject_fidelity` {before, after}: similarity of instance-prompt samples ("a photo of sks ...") to
  the instance images;
- `class_leakage` {before, after}: similarity of class-prompt samples ("a photo of a ...") to them;
- `specificity`: subject_fidelity.after - class_leakage.after. A text path that ignores the prompt
  gives both prompts the same images (the same seeds), so it is then exactly 0.

The scorer (`SubjectScorer`) looks at images reduced to a coarse grid. The subject's palette is the
colour bins that every instance image has a share of; backgrounds vary, so they drop out. An image's
similarity is the mean of two numbers in 0..1: how much of the subject's colour mass it has (histogram
intersection on the palette) and how well its subject-coloured mask overlaps the nearest instance's
(IoU). Samples come from fixed seeds, one per sample, so any two measurements compare image by image.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.errors import TrainingError
from training.validation import evaluating, grid

if TYPE_CHECKING:
    from training.config import RecipeConfig
    from training.state import TrainedModules

log = logging.getLogger("dogbooth.training.figures")

BINS = 4  # per channel: coarse enough that the subject's colour stays in one bin despite jitter and blur
PALETTE_SHARE = 0.03  # a bin is the subject's when every instance image has at least this share of it
GRID_FILE = "figures-grid.png"  # in the export directory, beside dogbooth-training.json


class FiguresError(TrainingError):
    """The instance images give the scorer nothing to measure (no colour they all share)."""


def _small(image: Any, side: int) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.int64)


def _bins(pixels: Any) -> Any:
    import numpy as np

    index = np.minimum(pixels * BINS // 256, BINS - 1)
    return index[..., 0] * BINS * BINS + index[..., 1] * BINS + index[..., 2]


def _histogram(bins: Any) -> Any:
    import numpy as np

    return np.bincount(bins.ravel(), minlength=BINS**3) / bins.size


class SubjectScorer:
    """Similarity in 0..1 of an image to the instance images: colour histogram and foreground mask."""

    def __init__(self, instances: Sequence[Any], side: int = 8) -> None:
        import numpy as np

        if not instances:
            raise FiguresError("the scorer needs at least one instance image")
        self.side = side
        bins = np.stack([_bins(_small(im, side)) for im in instances])
        hists = np.stack([_histogram(b) for b in bins])
        self.palette = np.flatnonzero(hists.min(axis=0) >= PALETTE_SHARE)
        if not len(self.palette):
            raise FiguresError(
                f"the {len(instances)} instance images share no colour (each bin under {PALETTE_SHARE:.0%} "
                "in some image): the statistics scorer has no subject to look for"
            )
        self.reference = hists.mean(axis=0)[self.palette]
        self.masks = np.isin(bins, self.palette)

    def similarity(self, image: Any) -> float:
        import numpy as np

        bins = _bins(_small(image, self.side))
        colour = np.minimum(_histogram(bins)[self.palette], self.reference).sum() / self.reference.sum()
        mask = np.isin(bins, self.palette)
        overlap = (self.masks & mask).sum(axis=(1, 2)) / np.maximum((self.masks | mask).sum(axis=(1, 2)), 1)
        return float(0.5 * colour + 0.5 * overlap.max())

    def mean(self, images: Sequence[Any]) -> float:
        return statistics.fmean(self.similarity(im) for im in images)


@dataclass(frozen=True)
class Samples:
    """Images of the instance and the class prompt, one per seed (the same seeds for both)."""

    instance: list[Any]
    klass: list[Any]


def draw(pipe: Any, cfg: RecipeConfig) -> Samples:
    """The figures' samples from `pipe` as it is now; seeds `figures.seed + i`, batched per prompt."""
    import torch

    f, res = cfg.figures, cfg.train.resolution
    pipe.set_progress_bar_config(disable=True)

    def sample(prompt: str) -> list[Any]:
        generators = [torch.Generator(device="cpu").manual_seed(f.seed + i) for i in range(f.samples)]
        with torch.inference_mode():
            out = pipe(
                prompt=[prompt] * f.samples,
                num_inference_steps=f.num_inference_steps,
                guidance_scale=f.guidance,
                height=res,
                width=res,
                generator=generators,
                output_type="pil",
            )
        return list(out.images)

    return Samples(sample(cfg.data.instance_prompt), sample(cfg.prior.class_prompt))


def draw_trained(pipe: Any, modules: TrainedModules, cfg: RecipeConfig) -> Samples:
    """`draw` in the middle of a run: the trained modules in eval mode for it, in train mode after."""
    with evaluating(modules):
        return draw(pipe, cfg)


def measure(scorer: SubjectScorer, after: Samples, before: Samples | None = None) -> dict[str, Any]:
    """The three figures (`before` values are None without base samples), rounded for the manifest."""

    def pair(a: list[Any], b: list[Any] | None) -> dict[str, float | None]:
        return {"before": round(scorer.mean(b), 4) if b is not None else None, "after": round(scorer.mean(a), 4)}

    fidelity = pair(after.instance, before.instance if before else None)
    leakage = pair(after.klass, before.klass if before else None)
    specificity = round(float(fidelity["after"] or 0.0) - float(leakage["after"] or 0.0), 4)
    return {
        "subject_fidelity": fidelity,
        "class_leakage": leakage,
        "specificity": specificity,
        "scorer": f"colour histogram + mask at {scorer.side}x{scorer.side} (training/figures.py)",
        "samples": len(after.instance),
    }


def describe(figures: dict[str, Any]) -> str:
    """Three lines for a terminal: each figure before -> after."""

    def pair(name: str) -> str:
        p = figures[name]
        before = f"{p['before']:.3f}" if p["before"] is not None else "-"
        return f"{name}: {before} -> {p['after']:.3f}"

    return "\n".join([pair("subject_fidelity"), pair("class_leakage"), f"specificity: {figures['specificity']:.3f}"])


def grid_image(before: Samples | None, after: Samples) -> Any:
    """Rows: instance prompt before, class prompt before, instance after, class after; columns: seeds."""
    rows = ([before.instance, before.klass] if before else []) + [after.instance, after.klass]
    return grid([im for row in rows for im in row], columns=len(after.instance))
