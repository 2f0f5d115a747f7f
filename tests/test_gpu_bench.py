"""scripts/gpu-bench.sh: run for real at tiny settings (tiny, CPU, 64 px, 2 steps) and check what it
writes against scripts/gpu-bench.schema.json; on a machine with a GPU, the real sd15 run too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dogbooth.core.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu-bench.sh"
SCHEMA = json.loads((REPO_ROOT / "scripts" / "gpu-bench.schema.json").read_text())
TINY_ARGS = ["--model", "tiny", "--device", "cpu", "--size", "64", "--steps", "2", "--batch-sizes", "1,2",
             "--min-time-s", "0"]  # fmt: skip


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "gpu-bench.json"
    # Run from elsewhere: the script must find services/ from its own place, not the working directory.
    # One torch thread: two on a shared 2-core machine wait on each other (docs/performance.md).
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(SCRIPT), *args, "--out", str(out)], check=True, cwd=tmp_path, env=env, timeout=600)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("gpu-bench"), *TINY_ARGS, "--options", "sdpa")


def test_tiny_on_cpu_writes_a_report_the_schema_accepts(tiny_report: dict[str, Any]) -> None:
    jsonschema.validate(tiny_report, SCHEMA)
    assert [(r["option"], r["batch_size"]) for r in tiny_report["results"]] == [("sdpa", 1), ("sdpa", 2)]
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in tiny_report["results"])
    assert tiny_report["gpu"] is None and tiny_report["torch"] and tiny_report["text_encoder"].startswith("timed")
    assert tiny_report["best"]["images_per_s"] == max(r["images_per_s"] for r in tiny_report["results"])


def test_the_schema_rejects_a_report_that_lost_its_figures(tiny_report: dict[str, Any]) -> None:
    broken = {**tiny_report, "results": [{**tiny_report["results"][0], "images_per_s": "fast"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in tiny_report.items() if k != "gpu"}, SCHEMA)


def test_without_transformers_times_the_unet_and_vae_loop(tmp_path: Path) -> None:
    report = _run(tmp_path, *TINY_ARGS, "--batch-sizes", "1", "--options", "eager_attn", "--without-transformers")
    jsonschema.validate(report, SCHEMA)
    assert report["text_encoder"].startswith("not timed") and "text_encoder" not in report["params"]
    settings = report["results"][0]["settings"]
    assert (settings["attention"], settings["channels_last"]) == ("eager", True)  # options build on each other


@pytest.mark.gpu
def test_sd15_on_the_gpu_is_sd15_sized(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    report = _run(tmp_path, "--batch-sizes", "1", "--options", "channels_last", "--min-time-s", "0")
    jsonschema.validate(report, SCHEMA)
    assert 850e6 < report["params"]["unet"] < 870e6 and report["gpu"] and report["cuda"]
