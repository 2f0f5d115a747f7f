"""Checkpoint directories: `<output>.work/checkpoints/checkpoint-<step>`, each complete or absent.

`<output>` is the `--output` flag (`list_checkpoints(output)`); other functions take the work dir.
A checkpoint is saved into a hidden temporary sibling and renamed into place only after its marker
file (`dogbooth-checkpoint.json`, written last) is on disk. So `complete_checkpoints` never sees a
half-written one, and one whose marker is missing or unreadable (disk trouble, tampering) is skipped
with a warning rather than breaking `--resume latest`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import CheckpointError, TrainingError

log = logging.getLogger("dogbooth.training.checkpoints")

MARKER = "dogbooth-checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # training time (steps only) spent up to this checkpoint


def work_dir_for(output_dir: str | Path) -> Path:
    """`<output>.work`: checkpoints, validation grids and class images live beside the export, which is
    swapped in whole and so cannot hold them."""
    output = Path(output_dir)
    return output.with_name(output.name + ".work")


def checkpoints_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of the run exporting to `output_dir` (the `--output` flag), oldest first."""
    return complete_checkpoints(work_dir_for(output_dir))


def _read(path: Path) -> Checkpoint | None:
    match = _NAME.match(path.name)
    if not match or not path.is_dir():
        return None
    try:
        meta: dict[str, Any] = json.loads((path / MARKER).read_text())
        step = int(meta["step"])
        losses = [float(x) for x in meta.get("losses", [])]
        seconds = float(meta.get("seconds", 0.0))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring checkpoint %s: marker missing or unreadable (%s)", path, e)
        return None
    if step != int(match.group(1)):
        log.warning("ignoring checkpoint %s: marker says step %d", path, step)
        return None
    return Checkpoint(path, step, losses, seconds)


def complete_checkpoints(work_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints under `work_dir`, oldest first. Temporary and damaged ones are left out."""
    root = checkpoints_dir(work_dir)
    if not root.is_dir():
        return []
    found = [c for p in root.iterdir() if (c := _read(p)) is not None]
    return sorted(found, key=lambda c: c.step)


def latest(work_dir: str | Path) -> Checkpoint | None:
    found = complete_checkpoints(work_dir)
    return found[-1] if found else None


def resolve_resume(work_dir: str | Path, resume: str | None) -> Checkpoint | None:
    """`--resume latest` (None when there is none yet: a fresh start), or a checkpoint directory."""
    if not resume:
        return None
    if resume == "latest":
        found = latest(work_dir)
        if found is None:
            log.info(
                "--resume latest: no complete checkpoint in %s, starting from step 0",
                checkpoints_dir(work_dir),
            )
        return found
    chosen = _read(Path(resume))
    if chosen is None:
        raise CheckpointError(f"--resume {resume}: not a complete checkpoint directory (expected checkpoint-<step>)")
    return chosen


def save(
    work_dir: str | Path,
    step: int,
    write: Callable[[Path], None],
    *,
    losses: list[float],
    seconds: float,
    keep_last: int,
) -> Path:
    """Write a checkpoint with `write(tmp_dir)`, add the marker, rename into place, prune old ones."""
    root = checkpoints_dir(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"checkpoint-{step:06d}"
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step:06d}-", dir=root))
    try:
        write(staging)
        marker = {"step": step, "losses": losses, "seconds": seconds}
        (staging / MARKER).write_text(json.dumps(marker))
        if target.exists():  # a stale one from an earlier run with the same output dir
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune(work_dir, keep_last)
    _sweep_temporaries(root)
    return target


def prune(work_dir: str | Path, keep_last: int) -> None:
    for old in complete_checkpoints(work_dir)[:-keep_last]:
        shutil.rmtree(old.path, ignore_errors=True)


def _sweep_temporaries(root: Path) -> None:
    """Leftovers of runs killed mid-save; safe because one output dir has one writer at a time."""
    for p in root.glob(".tmp-checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_trainable_only(accelerator: Any) -> None:
    """Make accelerate's save_state/load_state keep only trainable weights (LoRA: MBs, not the UNet).

    The frozen rest comes from the base model on resume, exactly as it was when training started.
    """
    from safetensors.torch import load_file, save_file

    def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        for i, model in enumerate(models):
            module = accelerator.unwrap_model(model)
            params = module.named_parameters()
            state = {n: p.detach().float().cpu().contiguous() for n, p in params if p.requires_grad}
            save_file(state, os.path.join(output_dir, f"trainable_{i}.safetensors"))
        del weights[:]  # accelerate would otherwise save every model in full as well

    def load_hook(models: list[Any], input_dir: str) -> None:
        for i, model in enumerate(models):
            module = accelerator.unwrap_model(model)
            state = load_file(os.path.join(input_dir, f"trainable_{i}.safetensors"))
            result = module.load_state_dict(state, strict=False)
            if result.unexpected_keys:
                raise TrainingError(
                    f"{input_dir}: checkpoint does not match this config "
                    f"(unexpected {result.unexpected_keys[:3]}); was it made with another method?"
                )
        del models[:]  # loaded here; accelerate must not look for full model files

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
