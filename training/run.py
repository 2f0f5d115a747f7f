"""The short entry point: config in, export out (what `python -m training` and `dogbooth train` call)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.models import TRAINING_MANIFEST
from training.checkpoints import work_dir_for
from training.config import RecipeConfig
from training.figures import GRID_FILE, describe
from training.recipe import DreamBoothRecipe

log = logging.getLogger("dogbooth.training")


@dataclass(frozen=True)
class RunSummary:
    export_dir: Path
    manifest: dict[str, Any]

    def describe(self) -> str:
        m = self.manifest
        return (
            f"export ({m['export']}): {self.export_dir}\n"
            f"checkpoints and validation grids: {work_dir_for(self.export_dir)}\n"
            f"steps: {m['steps']}  seconds/step: {m['seconds_per_step']}\n"
            f"initial_loss: {m['initial_loss']:.4f}  final_loss: {m['final_loss']:.4f}"
        ) + (f"\n{describe(m['figures'])}\ngrid: {self.export_dir / GRID_FILE}" if m.get("figures") else "")


def run(config: RecipeConfig, *, resume: str | None = None) -> RunSummary:
    """Fine-tune, export and return where the export went with its manifest."""

    recipe = DreamBoothRecipe(config, resume=resume)
    try:
        recipe.setup()
        result = recipe.measure(recipe.train())
        export_dir = recipe.export(result)
    finally:
        recipe.cleanup()
    return RunSummary(export_dir, json.loads((export_dir / TRAINING_MANIFEST).read_text()))
