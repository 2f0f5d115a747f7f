"""notebooks/dogbooth.ipynb runs headless, top to bottom, on the tiny model against a served endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import Stack
from nbclient import NotebookClient

from dogbooth.core.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "dogbooth.ipynb"


def _outputs(cell: Any, kind: str) -> list[Any]:
    return [o for o in cell.get("outputs", []) if kind in o.get("data", {}) or o.get("name") == kind]


def _text(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_notebook_runs_headless_on_tiny(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipykernel.kernelspec import install

    # A kernelspec for this very interpreter: a `python3` found on PATH might lack torch and dogbooth.
    install(kernel_name="python3", prefix=str(tmp_path / "kernel"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "kernel" / "share" / "jupyter"))
    monkeypatch.setenv("DOGBOOTH_NOTEBOOK_OUTPUT", str(tmp_path / "model"))
    monkeypatch.setenv("DOGBOOTH_ENDPOINT", stack.base_url)
    monkeypatch.setenv("DOGBOOTH_DEVICE", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters = nb.cells[1]
    assert "STEPS = None" in parameters.source
    parameters.source = parameters.source.replace("STEPS = None", "STEPS = 4")  # papermill-style override
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    by_heading = {i: c for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    texts = "\n".join(_text(c) for c in by_heading.values())
    assert f"output {tmp_path / 'model'}" in texts and "steps: 4" in texts
    assert "validation score (pixels):" in texts
    images = [c for c in by_heading.values() if _outputs(c, "image/png")]
    assert len(images) == 2, "the validation grid and the endpoint's image are both shown"
    assert f"served by {stack.profile.serve.app.model}" in texts
    assert (tmp_path / "model" / "dogbooth-training.json").is_file()
