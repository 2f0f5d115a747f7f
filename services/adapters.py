"""The LoRA adapter store: a directory with one dogbooth LoRA export per sub-folder, named by its id.

The store is read on each request that names an adapter, never listed once at start-up: an adapter
published after the replica started (trained with `--adapter-id`, which renames a finished export
into place) is served without a restart. Only folders whose name is a valid id count; training's
staging folders (`.NAME-export-*`) and work folders (`NAME.work`) never match.

Errors carry the HTTP status the replica answers with: 404 for an id not in the store, 422 for an
adapter that cannot be used (damaged manifest or weights), 424 for one trained on another base model.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.models import TRAINING_MANIFEST, ModelError, default_cache_dir, parse_model_ref
from services.schemas import ADAPTER_ID_PATTERN, AppArgs

ADAPTER_ID = re.compile(ADAPTER_ID_PATTERN)
WEIGHTS = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes (training/export.py)


class AdapterError(Exception):
    """An adapter that cannot serve this request; `status` is the HTTP answer."""

    status = 422

    def __init__(self, adapter_id: str, message: str) -> None:
        super().__init__(message)
        self.adapter_id = adapter_id


class UnknownAdapter(AdapterError):
    status = 404


class DamagedAdapter(AdapterError):
    status = 422


class WrongBase(AdapterError):
    status = 424


@dataclass(frozen=True)
class AdapterInfo:
    id: str
    path: str
    base_model: str
    rank: int | None
    size_bytes: int
    created: str | None

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "path"}


def store_dir(args: AppArgs) -> Path:
    """The profile's store, or `adapters/` under the model cache (the chart's model volume in a pod)."""
    if args.adapters.store:
        return Path(args.adapters.store).expanduser()
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    return cache / "adapters"


def _normalized(ref: str) -> str:
    try:
        return str(parse_model_ref(ref))
    except ModelError:
        return ref


def _manifest(adapter_id: str, folder: Path) -> dict[str, Any]:
    path = folder / TRAINING_MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DamagedAdapter(adapter_id, f"adapter {adapter_id!r} has no {TRAINING_MANIFEST}") from e
    except (OSError, ValueError) as e:
        raise DamagedAdapter(adapter_id, f"adapter {adapter_id!r}: unreadable {TRAINING_MANIFEST}: {e}") from e
    if not isinstance(data, dict):
        raise DamagedAdapter(adapter_id, f"adapter {adapter_id!r}: {TRAINING_MANIFEST} is not a JSON object")
    return data


def _created(folder: Path, manifest: dict[str, Any]) -> str | None:
    created = manifest.get("created")
    if isinstance(created, str):
        return created
    try:
        return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
    except OSError:
        return None


def check(store: Path, adapter_id: str, served_model: str) -> dict[str, Any]:
    """Whether `adapter_id` of `store` can serve `served_model`: its folder, manifest, base model and
    weights, without listing the folder. Returns the manifest; raises AdapterError."""
    folder = store / adapter_id
    if not ADAPTER_ID.match(adapter_id) or not folder.is_dir():
        raise UnknownAdapter(adapter_id, f"no adapter {adapter_id!r} in the store (GET /adapters lists them)")
    manifest = _manifest(adapter_id, folder)
    if manifest.get("export") != "lora":
        raise DamagedAdapter(
            adapter_id, f"adapter {adapter_id!r} is not a LoRA export (export: {manifest.get('export')!r})"
        )
    base = manifest.get("base_model")
    if not isinstance(base, str):
        raise DamagedAdapter(adapter_id, f"adapter {adapter_id!r}: {TRAINING_MANIFEST} names no base_model")
    if _normalized(base) != _normalized(served_model):
        raise WrongBase(
            adapter_id, f"adapter {adapter_id!r} was trained on {base!r} but this deployment serves {served_model!r}"
        )
    if not (folder / WEIGHTS).is_file():
        raise DamagedAdapter(adapter_id, f"adapter {adapter_id!r} has no {WEIGHTS}")
    return manifest


def read(store: Path, adapter_id: str, served_model: str) -> AdapterInfo:
    """The adapter `adapter_id` of `store`, checked against the served base model (`check`), with its
    rank, size and creation time. Raises AdapterError."""
    manifest = check(store, adapter_id, served_model)
    folder = store / adapter_id
    rank = (
        manifest.get("config", {}).get("model", {}).get("lora_rank")
        if isinstance(manifest.get("config"), dict)
        else None
    )
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return AdapterInfo(
        adapter_id,
        str(folder),
        manifest["base_model"],
        rank if isinstance(rank, int) else None,
        size,
        _created(folder, manifest),
    )


def listing(store: Path, served_model: str, loaded: set[str]) -> list[dict[str, Any]]:
    """Every id in the store, in name order, with its details or what is wrong with it."""
    if not store.is_dir():
        return []
    entries: list[dict[str, Any]] = []
    for folder in sorted(store.iterdir()):
        if not ADAPTER_ID.match(folder.name) or not folder.is_dir():
            continue
        try:
            entry = read(store, folder.name, served_model).describe()
        except AdapterError as e:
            entry = {"id": folder.name, "error": str(e), "status": e.status}
        entries.append({**entry, "loaded": folder.name in loaded})
    return entries
