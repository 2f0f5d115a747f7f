"""Model references and loading: `tiny`/`small`, a local directory, or a Hub id with `@revision`.

A local directory is either a diffusers pipeline (it has `model_index.json`) or a dogbooth LoRA
export (`dogbooth-training.json` naming its base model, plus the adapter weights), which is
served by loading the base and applying the adapter.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services import generated

log = logging.getLogger("dogbooth.models")

TRAINING_MANIFEST = "dogbooth-training.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(Exception):
    """A model reference that cannot be resolved or loaded; the message says what to change."""


@dataclass(frozen=True)
class ModelRef:
    kind: Literal["generated", "local", "hub"]
    name: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.revision}" if self.revision else self.name


def default_cache_dir() -> Path:
    return Path(os.environ.get("DOGBOOTH_CACHE", Path.home() / ".cache" / "dogbooth"))


def parse_model_ref(ref: str) -> ModelRef:
    """Classify a reference. Paths win over Hub ids so that `./out/model` is never sent to the Hub."""
    ref = ref.strip()
    if ref in generated.SPECS:
        return ModelRef("generated", ref)
    looks_like_path = ref.startswith(("/", "./", "../", "~")) or (os.sep in ref and Path(ref).exists())
    if looks_like_path:
        return ModelRef("local", str(Path(ref).expanduser().resolve()))
    name, at, revision = ref.partition("@")
    if _HUB_ID.match(name) and (not at or revision):
        return ModelRef("hub", name, revision or None)
    raise ModelError(
        f"model {ref!r} is not understood: use one of {sorted(generated.SPECS)}, "
        "a directory path (absolute or starting with ./), or a Hub id like org/name[@revision]"
    )


def _torch_dtype(dtype: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / TRAINING_MANIFEST
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable training manifest: {e}") from e
    return data


def _from_pretrained(source: str, dtype: str, **kwargs: Any) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(source, dtype=_torch_dtype(dtype), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_local(directory: Path, dtype: str, cache_dir: Path) -> Any:
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist")
    manifest = _read_manifest(directory)
    if (directory / "model_index.json").is_file():
        return _from_pretrained(str(directory), dtype, local_files_only=True)
    if manifest and manifest.get("export") == "lora":
        base = manifest.get("base_model")
        if not isinstance(base, str):
            raise ModelError(f"{directory / TRAINING_MANIFEST}: a LoRA export must name base_model")
        log.info("loading LoRA %s on base %s", directory, base)
        pipe = load_pipeline(base, dtype=dtype, cache_dir=cache_dir)
        pipe.load_lora_weights(str(directory))
        pipe.fuse_lora()  # fused weights serve at the base model's speed
        return pipe
    raise ModelError(
        f"{directory} is neither a diffusers pipeline (no model_index.json) "
        f"nor a dogbooth LoRA export (no {TRAINING_MANIFEST} with export: lora)"
    )


def load_pipeline(ref: str, *, dtype: str = "float32", cache_dir: Path | None = None) -> Any:
    """Load a pipeline on the CPU; the caller moves it to its device."""
    cache = cache_dir or default_cache_dir()
    parsed = parse_model_ref(ref)
    if parsed.kind == "generated":
        directory = generated.materialize(generated.SPECS[parsed.name], cache / "generated")
        return _from_pretrained(str(directory), dtype, local_files_only=True)
    if parsed.kind == "local":
        return _load_local(Path(parsed.name), dtype, cache)
    try:
        return _from_pretrained(
            parsed.name,
            dtype,
            revision=parsed.revision,
            token=os.environ.get("HF_TOKEN") or None,
            # Hub downloads share the model cache (one volume in the chart) unless HF_HUB_CACHE says otherwise.
            cache_dir=os.environ.get("HF_HUB_CACHE") or str(cache / "hub"),
            local_files_only=os.environ.get("HF_HUB_OFFLINE", "") in {"1", "true", "TRUE"},
        )
    except OSError as e:
        raise ModelError(
            f"could not load {parsed} from the Hugging Face Hub: {e}. "
            "Check the id and revision, set HF_TOKEN for gated models, or pre-fetch it into the HF cache."
        ) from e
