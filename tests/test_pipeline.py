"""The pipeline: scorer, gate, step CLI, and a whole local run ending with /imagine on the new model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import make_test_profile
from PIL import Image

from dogbooth import cli
from dogbooth.commands.pipeline import __main__ as step_cli
from dogbooth.commands.pipeline import score, steps
from dogbooth.platforms import local
from dogbooth.settings import gate, profiles
from training.data import synthetic_images
from training.errors import DataError


@pytest.fixture(scope="module")
def instances() -> list[Image.Image]:
    return synthetic_images(8, 64)


def test_pixel_scorer_ranks_the_subject_above_noise_and_flat_images(instances: list[Image.Image]) -> None:
    embed = score.embedder("pixels")
    subject = score.fidelity(synthetic_images(4, 64, seed=5), instances, embed)  # unseen images, same subject
    rng = np.random.default_rng(0)
    noise = score.fidelity([Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))], instances, embed)
    grey = score.fidelity([Image.new("RGB", (64, 64), (128, 128, 128))], instances, embed)
    black = score.fidelity([Image.new("RGB", (64, 64), (0, 0, 0))], instances, embed)
    threshold = gate.default_threshold("pixels")
    assert subject > grey > threshold > noise > black  # the figures in settings/gate.py's comment
    assert subject == pytest.approx(0.71, abs=0.03) and grey == pytest.approx(0.40, abs=0.03)
    assert score.fidelity(instances, instances, embed) > subject  # deterministic, and self is closest


def test_unknown_scorer_and_offline_clip_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(score.ScorerError, match="use `pixels` or `clip:"):
        score.embedder("dino")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(score.ScorerError, match="offline, use the `pixels` scorer"):
        score.embedder("clip:openai/clip-vit-base-patch32")


def test_gate_and_step_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    steps.gate(0.5, 0.5)
    with pytest.raises(steps.GateFailed, match="below the threshold"):
        steps.gate(0.49, 0.5)
    assert step_cli.main(["gate", "--score", "0.3", "--threshold", "0.2"]) == 0
    assert step_cli.main(["gate", "--score", "0.1", "--threshold", "0.2"]) == 1
    assert "not deploying" in capsys.readouterr().err
    args = [
        "prepare",
        "--config",
        "local",
        "--output",
        "/nonexistent/x",
        "--hub-repo",
        "",
        "--require-hub-repo",
    ]
    assert step_cli.main(args) == 1
    assert "hub-repo parameter is required" in capsys.readouterr().err


def test_bad_instance_data_fails_in_prepare(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    params = steps.Params(training_config="local", output_dir=tmp_path / "model", instance_dir=tmp_path / "photos")
    with pytest.raises(DataError, match=r"photos/broken\.png: unreadable image \(.*\); remove or replace the file"):
        steps.prepare(params)
    assert not (steps.pipeline_dir(tmp_path / "model") / "instance").exists()  # nothing staged


def test_local_pipeline_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """prepare -> train (4 steps) -> validate -> gate -> deploy, through the CLI, on a private stack.

    Four steps learn nothing, so the gate is opened here (pixels scorer, threshold -1, the lowest
    cosine); the default gate's refusals are in test_training_figures.py, its pass in `nox -s pipeline`.
    """
    profile_path = make_test_profile(tmp_path, "pytest-pipeline")
    output = tmp_path / "model"
    argv = ["pipeline", "--profile", str(profile_path), "--steps", "4", "--output", str(output)]
    try:
        code = cli.main([*argv, "--scorer", "pixels", "--threshold", "-1"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert [f"[{i}/5]" in out for i in range(1, 6)] == [True] * 5
        report = json.loads((steps.pipeline_dir(output) / steps.REPORT).read_text())
        assert f"validation score: {report['score']:.4f}" in out and report["base_score"] is not None
        assert len(report["images"]) == 2 and Path(report["grid"]).is_file()
        endpoint = out.strip().splitlines()[-1].removeprefix("endpoint: ")
        base = endpoint.removesuffix("/imagine")
        assert requests.get(f"{base}/readyz", timeout=10).json()["model"] == str(output.resolve())
        r = requests.get(endpoint, params={"prompt": "a photo of sks object", "seed": "1"}, timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert f"nox -s down -- --profile {profile_path}" in out
    finally:
        local.down("pytest-pipeline")


def test_local_pipeline_below_the_threshold_deploys_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default (subject) scorer's score is a difference of similarities in 0..1: 1.5 stops any run."""
    profile_path = make_test_profile(tmp_path, "pytest-pipeline-gate")
    output = tmp_path / "model"
    argv = ["pipeline", "--profile", str(profile_path), "--steps", "2", "--output", str(output)]
    try:
        code = cli.main([*argv, "--threshold", "1.5", "--no-compare-base"])
        out, err = capsys.readouterr()
        assert code == 1, out + err
        score = json.loads((steps.pipeline_dir(output) / steps.REPORT).read_text())["score"]
        assert f"error: validation score {score:.4f} is below the threshold 1.5000: not deploying" in err
        assert "[4/5] gate" in out and "[5/5]" not in out and "endpoint:" not in out
        assert local.LocalState.read("pytest-pipeline-gate") is None  # no Ray was started
        port = profiles.load_file(profile_path).serve.http_port
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    finally:
        local.down("pytest-pipeline-gate")


def test_step_cli_runs_the_workflow_steps_one_process_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the WorkflowTemplate's containers run, in the same order, sharing only the volume."""
    common = ["--config", "local", "--output", str(tmp_path / "models" / "m"), "--steps", "2", "--base-model", ""]
    assert step_cli.main(["train", *common]) == 1
    assert "the prepare step must run first" in capsys.readouterr().err
    assert step_cli.main(["prepare", *common, "--instance-dir", ""]) == 0
    assert step_cli.main(["train", *common]) == 0
    score_file = tmp_path / "score"
    assert step_cli.main(["validate", *common, "--scorer", "pixels", "--score-file", str(score_file)]) == 0
    report = json.loads((steps.pipeline_dir(tmp_path / "models" / "m") / steps.REPORT).read_text())
    assert float(score_file.read_text()) == pytest.approx(report["score"], abs=1e-6)
    assert report["base_score"] is None and report["model"] == str(tmp_path / "models" / "m")
    assert report["score"] < gate.default_threshold("pixels")  # 2 steps on toy: still noise, refused
    just_below, just_above = f"{report['score'] - 0.01:.6f}", f"{report['score'] + 0.01:.6f}"
    assert step_cli.main(["gate", "--score", score_file.read_text(), "--threshold", just_below]) == 0
    assert step_cli.main(["gate", "--score", score_file.read_text(), "--threshold", just_above]) == 1
