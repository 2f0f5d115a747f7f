"""A fine-tune reaches /imagine: full and LoRA exports served by the real Ray Serve app over HTTP.

The session's served stack is borrowed: redeployed in place with each export, then given back
serving its own model, so no second Ray head is started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Stack
from test_training import make_config

from dogbooth.platforms import local
from dogbooth.settings import profiles
from training.run import run


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for method in ("full", "lora"):
        out[method] = root / method
        run(make_config(out[method], model__method=method, train__max_train_steps=4))
    return out


@pytest.fixture(scope="module")
def trained_stack(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        local.up(stack.profile, source_root=stack.source_root)  # back to the session's own model


def _serve(stack: Stack, model: Path) -> None:
    local.up(profiles.with_overrides(stack.profile, model=str(model)), source_root=stack.source_root)


def _imagine(stack: Stack) -> requests.Response:
    params: dict[str, str | int] = {"prompt": "a photo of sks object", "seed": 1, "steps": 4}
    return requests.get(stack.endpoint, params=params, timeout=120)


def test_full_export_is_served(trained_stack: Stack, exports: dict[str, Path]) -> None:
    _serve(trained_stack, exports["full"])
    r = _imagine(trained_stack)
    assert r.status_code == 200, r.text
    assert r.content.startswith(b"\x89PNG")
    assert r.headers["x-model"] == str(exports["full"])


def test_lora_export_is_served(trained_stack: Stack, exports: dict[str, Path]) -> None:
    _serve(trained_stack, exports["lora"])
    r = _imagine(trained_stack)
    assert r.status_code == 200, r.text
    assert r.content.startswith(b"\x89PNG")
    assert r.headers["x-model"] == str(exports["lora"])
