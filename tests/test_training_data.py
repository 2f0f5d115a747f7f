"""Training data preparation, checkpoint discovery and the cluster Job: fast, no training steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dogbooth.cli import load_profile
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import trainjob as cluster
from training import checkpoints
from training.data import load_folder, synthetic_images, write_synthetic_dataset
from training.errors import DataError, TrainingError


def _save(path: Path, size: tuple[int, int], color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def test_resize_center_crop_and_dedupe(tmp_path: Path) -> None:
    _save(tmp_path / "wide.png", (200, 100))
    _save(tmp_path / "dup.png", (200, 100))  # identical pixels to wide.png under another name: dropped
    _save(tmp_path / "blue.png", (100, 100), (20, 20, 220))
    _save(tmp_path / "tall.png", (80, 160), (10, 200, 10))
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_folder(tmp_path, 64)
    assert [im.size for im in images] == [(64, 64)] * 3
    assert {im.getpixel((32, 32)) for im in images} == {(200, 30, 30), (10, 200, 10), (20, 20, 220)}


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=f"{tmp_path}: no images"):
        load_folder(tmp_path, 64)
    with pytest.raises(DataError, match="not a directory"):
        load_folder(tmp_path / "missing", 64)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "ok.png", (64, 64))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: unreadable image"):
        load_folder(tmp_path, 64)


def test_too_small_image_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "ok.png", (64, 64))
    _save(tmp_path / "tiny.png", (63, 80))
    with pytest.raises(DataError, match=r"tiny\.png: 63x80 px is too small; every side must be at least 64"):
        load_folder(tmp_path, 64)


def test_bad_data_fails_the_cli_with_the_message(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "training", "--instance-dir", str(tmp_path), "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"error: {tmp_path}: no images" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_synthetic_dataset_is_deterministic(tmp_path: Path) -> None:
    a, b = synthetic_images(3, 64, seed=1), synthetic_images(3, 64, seed=1)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    assert len({im.tobytes() for im in a}) == 3  # varied backgrounds and placements
    folder = write_synthetic_dataset(tmp_path / "data", 3, 64)
    assert len(load_folder(folder, 64)) == 3
    stale = folder / "object-001.png"  # as a work dir left by an older generator holds
    Image.new("RGB", (64, 64), (200, 30, 30)).save(stale)
    write_synthetic_dataset(tmp_path / "data", 3, 64)
    assert [im.tobytes() for im in load_folder(folder, 64)] == [im.tobytes() for im in synthetic_images(3, 64)]


def test_only_complete_checkpoints_are_listed(tmp_path: Path) -> None:
    root = checkpoints.checkpoints_dir(tmp_path)
    checkpoints.save(tmp_path, 5, lambda d: (d / "weights").touch(), losses=[1.0], seconds=1, keep_last=5)
    (root / ".tmp-checkpoint-000009-abc").mkdir()  # a save that was killed
    (root / "checkpoint-000010").mkdir()  # no marker
    (root / "checkpoint-000011").mkdir()
    (root / "checkpoint-000011" / checkpoints.MARKER).write_text("{trunc")
    (root / "checkpoint-000012").mkdir()
    (root / "checkpoint-000012" / checkpoints.MARKER).write_text(json.dumps({"step": 3}))  # wrong step
    assert [c.step for c in checkpoints.complete_checkpoints(tmp_path)] == [5]
    assert checkpoints.resolve_resume(tmp_path, "latest") == checkpoints.latest(tmp_path)
    assert checkpoints.resolve_resume(tmp_path / "elsewhere", "latest") is None
    for step in (6, 7, 8):
        checkpoints.save(tmp_path, step, lambda d: None, losses=[], seconds=0, keep_last=2)
    assert [c.step for c in checkpoints.complete_checkpoints(tmp_path)] == [7, 8]
    assert not list(root.glob(".tmp-*"))


@pytest.mark.parametrize("name", ["eks", "kind-gpu"])
def test_cluster_job_renders_and_validates(name: str) -> None:
    request = cluster.JobRequest(run_name="t1", hub_repo="me/dog", flags={"max_train_steps": 100, "output": "x"})
    objects = cluster.render_job(load_profile(name), request)  # validate_k8s runs inside
    job = next(o for o in objects if o["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"] == ["python", "-m", "training"]
    assert "--config=training/configs/a10g.yaml" in container["args"]
    assert {"--resume=latest", "--hub-repo=me/dog", "--max-train-steps=100"} <= set(container["args"])
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    mount = container["volumeMounts"][0]["mountPath"]
    assert f"--output={mount}/models/dogbooth-model" in container["args"]
    claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert len(claims) == (1 if name == "eks" else 0)  # eks caches are per worker: the Job gets its own volume


def test_dry_run_cli_prints_a_gpu_job() -> None:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "dogbooth", "train", "--profile", "eks", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kind: Job" in proc.stdout and "nvidia.com/gpu: 1" in proc.stdout


def test_kind_cpu_gets_a_cpu_job_and_local_none() -> None:
    objects = cluster.render_job(load_profile("kind-cpu"), cluster.JobRequest(run_name="t1"))
    container = objects[-1]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "--config=training/configs/local.yaml" in container["args"]
    with pytest.raises(TrainingError, match="platform local"):
        cluster.render_job(load_profile("local"), cluster.JobRequest())
