"""Model references: generated, local directory, Hub id with revision (from an offline HF cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services import generated
from services.models import ModelError, ModelRef, load_pipeline, parse_model_ref
from services.pipeline import Generator, Job
from services.schemas import AppArgs


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated.materialize(generated.TINY, tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize(("ref", "expected"), [
    ("tiny", ModelRef("generated", "tiny")),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", ModelRef("hub", "stable-diffusion-v1-5/stable-diffusion-v1-5")),
    ("org/model@0123abc", ModelRef("hub", "org/model", "0123abc")),
    ("/abs/path", ModelRef("local", "/abs/path")),
])  # fmt: skip
def test_parse_model_ref(ref: str, expected: ModelRef) -> None:
    assert parse_model_ref(ref) == expected


@pytest.mark.parametrize("ref", ["no-slash", "org/model@", "a b/c"])
def test_unparseable_refs_say_what_is_accepted(ref: str) -> None:
    with pytest.raises(ModelError, match="Hub id like org/name"):
        parse_model_ref(ref)


def test_materialize_is_cached_and_deterministic(tmp_path: Path, tiny_dir: Path) -> None:
    again = generated.materialize(generated.TINY, tmp_path)
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (again / weights).read_bytes() == (tiny_dir / weights).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging dirs left behind"


def test_local_directory_loads(tiny_dir: Path) -> None:
    pipe = load_pipeline(str(tiny_dir))
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_missing_and_foreign_directories_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_pipeline(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither a diffusers pipeline"):
        load_pipeline(str(tmp_path / "empty"))
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "dogbooth-training.json").write_text(json.dumps({"export": "lora"}))
    with pytest.raises(ModelError, match="base_model"):
        load_pipeline(str(lora))


def _fake_hub_cache(cache: Path, repo: str, revision: str, source: Path) -> None:
    """The layout huggingface_hub writes: models--org--name/{refs,snapshots/<sha>}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, root / "snapshots" / revision)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)


def test_hub_ids_with_revision_load_from_the_hf_cache_offline(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = "0" * 40
    _fake_hub_cache(tmp_path / "hub", "dogbooth/tiny-test", sha, tiny_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert type(load_pipeline(f"dogbooth/tiny-test@{sha}")).__name__ == "StableDiffusionPipeline"
    assert type(load_pipeline("dogbooth/tiny-test")).__name__ == "StableDiffusionPipeline"
    with pytest.raises(ModelError, match="Hugging Face Hub"):
        load_pipeline("dogbooth/absent-model")


def test_generator_is_the_python_callers_api(tiny_dir: Path) -> None:
    gen = Generator(AppArgs(model=str(tiny_dir)))
    job = Job("a photo of sks dog", "", 2, 7.5, 64, 64, 5, "png")
    assert gen.generate(job) == gen.generate(job)
    batched = gen.generate_many([job, Job("other", "", 2, 7.5, 64, 64, 6, "jpeg")])
    assert all(isinstance(b, bytes) for b in batched)
