"""Export: a diffusers pipeline directory (full fine-tune) or LoRA safetensors, plus `dogbooth-training.json`.

The export is assembled in a temporary sibling and swapped in with renames, so the output directory
always holds either the previous export or the new one, never a mix. The serve app loads either kind
through its model reference (`services.models`): a LoRA export is applied to its recorded base model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.models import TRAINING_MANIFEST, parse_model_ref
from training.config import ExportConfig, RecipeConfig
from training.errors import TrainingError
from training.figures import GRID_FILE

if TYPE_CHECKING:
    from training.state import TrainedModules, TrainResult

log = logging.getLogger("dogbooth.training.export")

LOSS_WINDOW = 10  # initial_loss / final_loss: the mean of this many steps at each end


def check_hub_token(cfg: ExportConfig) -> None:
    """Fail before training, not after, when a push is asked for without a token."""
    if cfg.hub_repo and not os.environ.get("HF_TOKEN"):
        raise TrainingError(f"export.hub_repo is {cfg.hub_repo!r} but HF_TOKEN is not set; set it or drop hub_repo")


def loss_summary(losses: list[float]) -> dict[str, float | None]:
    if not losses:
        return {"initial_loss": None, "final_loss": None}
    return {
        "initial_loss": statistics.fmean(losses[:LOSS_WINDOW]),
        "final_loss": statistics.fmean(losses[-LOSS_WINDOW:]),
    }


def _base_reference(ref: str) -> str:
    """What a server elsewhere can load: generated names and Hub ids as given, local paths made absolute."""
    parsed = parse_model_ref(ref)
    return parsed.name if parsed.kind == "local" else str(parsed)


def manifest(cfg: RecipeConfig, result: TrainResult) -> dict[str, Any]:
    prompts: dict[str, Any] = {
        "instance": cfg.data.instance_prompt,
        "validation": list(cfg.validation.prompts),
    }
    if cfg.prior.enabled:
        prompts["class"] = cfg.prior.class_prompt
    return {
        "export": cfg.model.method,
        "base_model": _base_reference(cfg.model.base_model),
        "steps": result.steps,
        "prompts": prompts,
        "seconds_per_step": round(result.seconds_per_step, 4),
        **loss_summary(result.losses),
        "resumed_from_step": result.resumed_from,
        "resolution": cfg.train.resolution,
        "figures": result.figures,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": cfg.model_dump(),
    }


def _adapter(module: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A peft-injected module's LoRA weights, in peft's own key format, and its LoraConfig as metadata.

    Not `convert_state_dict_to_diffusers`: it renames only attention keys, and a file that mixes the two
    formats loads without the renamed ones. The metadata carries lora_alpha: without it the loader
    assumes alpha = rank, and an adapter trained at another scale serves a different model.
    """
    from peft.utils import get_peft_model_state_dict

    config = {k: sorted(v) if isinstance(v, set) else v for k, v in module.peft_config["default"].to_dict().items()}
    return get_peft_model_state_dict(module), config


def _save_lora(modules: TrainedModules, directory: Path) -> None:
    from diffusers import StableDiffusionPipeline

    unet_layers, unet_config = _adapter(modules.unwrap(modules.unet))
    layers: dict[str, Any] = {"unet_lora_layers": unet_layers, "unet_lora_adapter_metadata": unet_config}
    if modules.text_encoder is not None:
        text_layers, text_config = _adapter(modules.unwrap(modules.text_encoder))
        layers.update(text_encoder_lora_layers=text_layers, text_encoder_lora_adapter_metadata=text_config)
    StableDiffusionPipeline.save_lora_weights(str(directory), safe_serialization=True, **layers)


def _save_full(pipe: Any, directory: Path) -> None:
    import torch

    for name in ("vae", "text_encoder"):  # frozen parts may sit in fp16 on a GPU; export full precision
        module = getattr(pipe, name)
        if module.dtype != torch.float32:
            module.to(dtype=torch.float32)
    pipe.save_pretrained(str(directory), safe_serialization=True)


def write_export(target: Path, cfg: RecipeConfig, result: TrainResult, *, pipe: Any, modules: TrainedModules) -> Path:
    """Write the export for `result` to `target` atomically and push it when configured.

    A LoRA export saves the adapters of `modules`; a full one saves all of `pipe`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-export-", dir=target.parent))
    try:
        if cfg.model.method == "lora":
            _save_lora(modules, staging)
        else:
            _save_full(pipe, staging)
        if result.grid is not None:
            result.grid.save(staging / GRID_FILE, format="PNG")
        data = manifest(cfg, result)
        (staging / TRAINING_MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("export (%s) written to %s", cfg.model.method, target)
    if cfg.export.hub_repo:
        push_to_hub(target, cfg.export)
    return target


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    if any(target.iterdir()) and not (target / TRAINING_MANIFEST).is_file():
        raise TrainingError(
            f"{target} exists and is not a dogbooth export; refusing to replace it (pick another --output)"
        )
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    os.rename(target, old / "export")
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def publish_adapter(export_dir: Path, store: Path, adapter_id: str) -> Path:
    """Copy a finished LoRA export into the adapter store as `<store>/<adapter_id>`, atomically.

    The copy is staged in a hidden sibling (which the store never lists) and renamed into place, so a
    replica reading the store sees the previous adapter or the new one, never half of one.
    """
    data = json.loads((export_dir / TRAINING_MANIFEST).read_text())
    if data.get("export") != "lora":
        raise TrainingError(f"{export_dir} is a {data.get('export')} export; only LoRA exports go to the adapter store")
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{adapter_id}-publish-", dir=store))
    try:
        copy = staging / "adapter"
        shutil.copytree(export_dir, copy)
        _swap_in(copy, store / adapter_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("adapter %s published to %s", adapter_id, store / adapter_id)
    return store / adapter_id


def push_to_hub(directory: Path, cfg: ExportConfig) -> str:
    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN")
    if not cfg.hub_repo or not token:
        raise TrainingError("a Hub push needs export.hub_repo and HF_TOKEN")
    api = HfApi(token=token)
    try:
        api.create_repo(cfg.hub_repo, private=cfg.hub_private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(directory), repo_id=cfg.hub_repo, commit_message="dogbooth DreamBooth export"
        )
    except Exception as e:  # the hub client raises many types; all mean the same to the user
        raise TrainingError(f"push to the Hub repo {cfg.hub_repo} failed: {e}") from e
    log.info("pushed %s to https://huggingface.co/%s (%s)", directory, cfg.hub_repo, getattr(info, "oid", ""))
    return cfg.hub_repo
