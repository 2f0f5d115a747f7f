"""Training to serving: `train --method lora --adapter-id NAME` publishes into the profile's adapter store.

Real LoRA training steps through the CLI; the store is then read by the same code the replica uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_test_profile

from dogbooth import cli
from services.adapters import WEIGHTS
from services.models import TRAINING_MANIFEST


@pytest.fixture
def profile_with_store(tmp_path: Path) -> tuple[Path, Path]:
    path = make_test_profile(tmp_path, "publish")
    data = yaml.safe_load(path.read_text())
    store = tmp_path / "store"
    data["serve"]["app"]["adapters"] = {"store": str(store), "max_loaded": 32}
    path.write_text(yaml.safe_dump(data))
    return path, store


def test_train_with_an_adapter_id_publishes_a_whole_lora_export(profile_with_store: tuple[Path, Path]) -> None:
    profile, store = profile_with_store
    argv = ["train", "--profile", str(profile), "--method", "lora", "--max-train-steps", "2", "--adapter-id", "pub"]
    assert cli.main(argv) == 0
    manifest = json.loads((store / "pub" / TRAINING_MANIFEST).read_text())
    assert manifest["export"] == "lora"
    assert (store / "pub" / WEIGHTS).stat().st_size > 0
    # Staging and work folders are never valid ids, so the replica lists only what was published.
    assert [p.name for p in store.iterdir() if not p.name.startswith(".") and not p.name.endswith(".work")] == ["pub"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--method", "full", "--adapter-id", "pub"], "--adapter-id needs --method lora"),
        (["--method", "lora", "--adapter-id", "Bad_Name"], "--adapter-id 'Bad_Name'"),
        (["--method", "lora", "--adapter-id", "pub", "--output", "x"], "give --adapter-id or --output, not both"),
    ],
)
def test_a_publish_that_cannot_work_is_refused_before_training(
    profile_with_store: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    profile, store = profile_with_store
    assert cli.main(["train", "--profile", str(profile), "--max-train-steps", "2", *extra]) == 1
    assert says in capsys.readouterr().err
    assert not store.exists()
