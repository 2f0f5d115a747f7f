"""Training interruption: SIGKILL a real training run between checkpoints, resume it, check nothing was lost.

The run is the training package's own entry point (`python -m training`) in a child process, on a
copy of the local training config with frequent checkpoints and pruning off, so every completed
checkpoint must still be there after the resume, byte for byte, and the run must end at the step asked.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dogbooth.commands.reliability import ReliabilityError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.polling import poll

log = logging.getLogger("dogbooth.commands.reliability")

MARKER = "dogbooth-checkpoint.json"  # training/checkpoints.py: written last, so its presence means complete
MANIFEST = "dogbooth-training.json"  # services/models.py TRAINING_MANIFEST, in the export directory


@dataclass
class TrainResult:
    steps_requested: int
    checkpoint_every: int
    killed_after_step: int | None = None  # newest complete checkpoint when the SIGKILL landed
    checkpoints_at_kill: list[int] = field(default_factory=list)
    checkpoints_after: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)  # complete at the kill, missing or changed after
    resumed_from: int | None = None
    final_step: int | None = None
    resume_exit: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def write_config(directory: Path, *, steps: int, every: int) -> Path:
    """The local training config with checkpoints every `every` steps, none pruned, no mid-run validation."""
    data = yaml.safe_load((REPO_ROOT / "training" / "configs" / "local.yaml").read_text())
    data["train"]["max_train_steps"] = steps
    data["checkpoint"].update(every_n_steps=every, keep_last=steps // every + 1)
    data["validation"]["every_n_steps"] = steps  # the grid at the end only: it is inference, not training
    path = directory / "reliability-train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def complete(checkpoints: Path) -> dict[int, bytes]:
    """{step: marker bytes} of the complete checkpoints."""
    found = {}
    for marker in checkpoints.glob(f"checkpoint-*/{MARKER}"):
        try:
            found[int(json.loads(marker.read_bytes())["step"])] = marker.read_bytes()
        except (OSError, ValueError, KeyError):
            continue
    return found


def _start(config: Path, output: Path, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "training", "--config", str(config), "--output", str(output), *extra]
    log.info("$ %s", " ".join(argv))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _kill_between(proc: subprocess.Popen[bytes], checkpoints: Path, *, after: int, timeout_s: float) -> None:
    """SIGKILL the run a quarter of the last gap after its `after`-th checkpoint: mid-interval, not saving.

    On a timeout the run is left to the caller, which kills it whatever happened here."""
    seen_at: dict[int, float] = {}

    def written() -> bool | None:
        if proc.poll() is not None:
            raise ReliabilityError(f"training exited ({proc.returncode}) before its checkpoint #{after}")
        for step in complete(checkpoints):
            seen_at.setdefault(step, time.monotonic())  # when it appeared: the gap sets when to kill
        return True if len(seen_at) >= after else None

    # A short interval: the time each checkpoint appears is measured to the interval.
    poll(f"training checkpoint #{after}", written, timeout_s=timeout_s, interval_s=0.05, error=ReliabilityError)
    times = sorted(seen_at.values())
    time.sleep((times[-1] - times[-2]) / 4 if len(times) > 1 else 0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: data loader workers too
    proc.wait(timeout=30)


def run(workdir: Path, *, steps: int = 24, every: int = 6, timeout_s: float = 600) -> TrainResult:
    """Train `steps` steps with a checkpoint every `every`; kill after the second checkpoint; resume."""
    if steps // every < 3:
        raise ReliabilityError("need at least three checkpoint intervals: two before the kill, one after")
    workdir.mkdir(parents=True, exist_ok=True)
    config, output, log_path = (
        write_config(workdir, steps=steps, every=every),
        workdir / "model",
        workdir / "train.log",
    )
    checkpoints = output.with_name(output.name + ".work") / "checkpoints"
    result = TrainResult(steps_requested=steps, checkpoint_every=every)
    proc = _start(config, output, log_path)
    try:
        _kill_between(proc, checkpoints, after=2, timeout_s=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    at_kill = complete(checkpoints)
    result.checkpoints_at_kill = sorted(at_kill)
    result.killed_after_step = max(at_kill, default=None)
    log.info("training: SIGKILLed with checkpoints %s; resuming", result.checkpoints_at_kill)
    resumed = _start(config, output, log_path, "--resume", "latest")
    try:
        result.resume_exit = resumed.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(resumed.pid, signal.SIGKILL)
        result.problems.append(f"the resumed run did not finish within {timeout_s:.0f}s")
    _verify(result, at_kill, complete(checkpoints), output, log_path)
    return result


def _verify(
    result: TrainResult, at_kill: dict[int, bytes], after: dict[int, bytes], output: Path, log_path: Path
) -> None:
    result.checkpoints_after = sorted(after)
    result.lost = sorted(s for s, marker in at_kill.items() if after.get(s) != marker)
    problems = result.problems
    if len(at_kill) < 2:
        problems.append(f"expected two complete checkpoints before the kill, found {sorted(at_kill)}")
    if result.lost:
        problems.append(f"checkpoints complete at the kill were lost or rewritten: {result.lost}")
    if result.resume_exit not in (None, 0):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        problems.append(f"the resumed run exited {result.resume_exit}:\n{tail}")
    try:
        manifest = json.loads((output / MANIFEST).read_text())
        result.final_step, result.resumed_from = manifest.get("steps"), manifest.get("resumed_from_step")
    except (OSError, ValueError) as e:
        problems.append(f"no training manifest in {output}: {e}")
        return
    if result.final_step != result.steps_requested:
        problems.append(f"the run ended at step {result.final_step}, not {result.steps_requested}")
    if result.resumed_from != result.killed_after_step:
        problems.append(
            f"resumed from step {result.resumed_from}, not the newest checkpoint {result.killed_after_step}"
        )
    expected = list(range(result.checkpoint_every, result.steps_requested, result.checkpoint_every))
    if result.checkpoints_after != expected:
        problems.append(f"checkpoints after the resume are {result.checkpoints_after}, expected {expected}")
