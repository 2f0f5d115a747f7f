"""Profiles load, validate with errors that name file and key, and generate a valid Serve config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from dogbooth.core.errors import ProfileError
from dogbooth.render.serveconfig import serve_config
from dogbooth.settings import profiles


@pytest.mark.parametrize("name", profiles.available())
def test_every_profile_loads_and_generates_a_valid_serve_config(name: str) -> None:
    profile = profiles.load(name)
    config = serve_config(profile, "abc123")
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    assert app["args"] == profile.serve.app.model_dump(mode="json")
    assert app["runtime_env"]["env_vars"]["DOGBOOTH_CODE_REVISION"] == "abc123"


def test_local_profile_is_the_offline_default() -> None:
    local = profiles.load("local")
    assert (local.platform, local.serve.app.model, local.serve.app.device) == ("local", "tiny", "cpu")
    assert local.serve.host == "127.0.0.1"


def _write(tmp_path: Path, name: str, mutate: object) -> Path:
    data = yaml.safe_load((profiles.PROFILES_DIR / "local.yaml").read_text())
    mutate(data)  # type: ignore[operator]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("mutate", "key", "hint"), [
    (lambda d: d["serve"]["app"].update(dtype="float8"), "serve.app.dtype", "float16"),
    (lambda d: d["serve"]["app"].update(device="tpu"), "serve.app.device", "cuda"),
    (lambda d: d["serve"]["deployment"].update(max_ongoing_requests=2), "serve", "deployment.max_ongoing_requests"),
    (lambda d: d["serve"].update(http_port=0), "serve.http_port", "greater than"),
    (lambda d: d["serve"]["app"]["defaults"].update(width=65), "serve.app.defaults.width", "multiple"),
    (lambda d: d["serve"]["app"].update(colour="blue"), "serve.app.colour", "Extra inputs"),
    (lambda d: d.update(platform="laptop"), "platform", "local"),
    (lambda d: d["serve"]["app"].update(dtype="float16"), "serve.app", "needs device cuda"),
])  # fmt: skip
def test_bad_profile_names_file_key_and_what_is_allowed(tmp_path: Path, mutate: object, key: str, hint: str) -> None:
    path = _write(tmp_path, "bad", mutate)
    with pytest.raises(ProfileError) as info:
        profiles.load_file(path)
    message = str(info.value)
    assert f"{path}: {key}" in message
    assert hint in message


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(ProfileError, match="available: .*local"):
        profiles.load("nope")


def test_file_name_and_profile_name_must_agree(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine", lambda d: d.update(name="other"))
    with pytest.raises(ProfileError, match="must match the file name"):
        profiles.load_file(path)


def test_yaml_syntax_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("serve: [unclosed\n")
    with pytest.raises(ProfileError, match=str(path)):
        profiles.load_file(path)


def test_overrides_resolve_relative_model_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    profile = profiles.with_overrides(profiles.load("local"), model="./model", port=8123)
    assert profile.serve.app.model == str(tmp_path / "model")
    assert profile.serve.http_port == 8123
    with pytest.raises(ProfileError, match="--model"):
        profiles.with_overrides(profiles.load("local"), model="not a model")
