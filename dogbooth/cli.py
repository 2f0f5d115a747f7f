"""`python -m dogbooth <command>`: what the nox sessions call. Parsing here, logic in the modules."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dogbooth.bootstrap import nox_phases
from dogbooth.commands import bench, benchloop
from dogbooth.commands import metrics as metrics_command
from dogbooth.commands.pipeline import command
from dogbooth.commands.reliability import ReliabilityError, runner
from dogbooth.commands.train import add_args, train
from dogbooth.core.errors import DogboothError
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import devloop, dispatch, doctor, local
from dogbooth.render import chart, k8svalidate, tilt
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile
from loadtest import run
from loadtest.mix import SHAPE_NAMES

log = logging.getLogger("dogbooth")


def load_profile(
    name: str, *, model: str | None = None, port: int | None = None, adapters: Path | None = None
) -> Profile:
    """A profile by name, or by path to a YAML file; with command-line overrides applied."""
    path = Path(name)
    profile = profiles.load_file(path) if path.suffix in {".yaml", ".yml"} else profiles.load(name)
    return profiles.with_overrides(profile, model=model, port=port, adapters=adapters)


def _profile_args(p: argparse.ArgumentParser, *, default: str | None = "local") -> None:
    p.add_argument("--profile", default=default, help=f"one of {', '.join(profiles.available())}, or a file")
    p.add_argument("--model", help="model reference: tiny, small, sd15, a directory, or org/name[@revision]")
    p.add_argument("--port", type=int, help="HTTP port of the Serve endpoint")
    p.add_argument("--source-root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)


def _cluster(command: str, profile: Profile, a: argparse.Namespace) -> None:
    """kind and eks: run (or with --dry-run, print) the ordered plan (dogbooth/platforms/dispatch.py)."""

    endpoint = dispatch.run(command, profile, dry_run=a.dry_run)
    if endpoint:
        print(f"endpoint: {endpoint}", flush=True)


def _local_dry_run(command: str, profile: Profile) -> None:
    print(f"profile {profile.name} is platform local: `{command}` starts/stops a Ray head on this machine "
          "(dogbooth/platforms/local.py); nothing to plan (dry run: nothing was changed)", flush=True)  # fmt: skip


def cmd_up(a: argparse.Namespace) -> None:
    entered = time.time()
    profile = load_profile(a.profile, model=a.model, port=a.port, adapters=a.adapters)
    if profile.platform != "local":
        return _cluster("up", profile, a)  # the doctor runs first there, inside dispatch.run
    doctor.preflight(profile, "up", dry_run=a.dry_run)
    if a.dry_run:
        return _local_dry_run("up", profile)
    timings = {**nox_phases(entered), "doctor (preflight)": time.time() - entered}
    endpoint = local.up(profile, source_root=a.source_root.resolve(), timings=timings)
    if a.timings:
        print(benchloop.timings_table(timings), flush=True)
    print(f"endpoint: {endpoint}", flush=True)


def cmd_cloud(a: argparse.Namespace) -> None:
    profile = load_profile(a.profile, model=a.model, port=a.port)
    if profile.platform != "eks":
        raise DogboothError(f"cloud: profile {profile.name} is platform {profile.platform}; cloud is for eks")
    _cluster("up", profile, a)  # the doctor (quota preflight included) runs first, inside dispatch.run


def cmd_down(a: argparse.Namespace) -> None:
    profile = load_profile(a.profile)
    if profile.platform != "local":
        return _cluster("down", profile, a)
    if a.dry_run:
        return _local_dry_run("down", profile)
    local.down(profile.name)


def cmd_dev(a: argparse.Namespace) -> None:

    name = a.profile
    if name is None:
        name, reason = devloop.choose_profile()
        print(f"dogbooth dev: profile {name} ({reason})", flush=True)
    profile = load_profile(name, model=a.model, port=a.port, adapters=a.adapters)
    if profile.platform != "local":
        return _cluster("dev", profile, a)  # the doctor runs first there, inside dispatch.run
    doctor.preflight(profile, "dev", dry_run=a.dry_run)
    if a.dry_run:
        return _local_dry_run("dev", profile)
    devloop.run(profile, a.source_root.resolve())


def cmd_doctor(a: argparse.Namespace) -> None:
    profile = load_profile(a.profile, model=a.model, port=a.port)
    doctor.report(profile, a.for_command or doctor.default_command(profile), listed=False)


def _doctor_args(p: argparse.ArgumentParser) -> None:
    what = "check for this command (default: dev on kind, which also needs tilt; up elsewhere)"
    p.add_argument("--for", dest="for_command", choices=doctor.PREFLIGHT_COMMANDS, help=what)


def cmd_render(a: argparse.Namespace) -> None:
    profile = load_profile(a.profile, model=a.model, port=a.port)
    if a.stdout:
        print(chart.render_stdout(profile, image=a.image), flush=True)
        return
    if a.output is None:
        raise DogboothError("render: give --output DIR (or --stdout)")
    for path in chart.render_all(profile, a.output, image=a.image):
        print(path, flush=True)


def cmd_tilt_config(a: argparse.Namespace) -> None:
    profile = load_profile(a.profile, model=a.model, port=a.port)
    if profile.platform != "kind":
        raise DogboothError(f"tilt-config: profile {profile.name} is platform {profile.platform}; Tilt runs on kind")
    print(json.dumps(tilt.tilt_config(profile), indent=1), flush=True)


def cmd_train(a: argparse.Namespace) -> None:
    train(load_profile(a.profile, port=a.port), a)


def cmd_pipeline(a: argparse.Namespace) -> None:
    command.run(load_profile(a.profile, port=a.port), a)


def cmd_fetch_schemas(a: argparse.Namespace) -> None:
    for path in k8svalidate.fetch_schemas(a.output):
        print(path, flush=True)


def _fetch_schemas_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=Path, default=Path("schemas"), help="target directory (default schemas/)")


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=Path, help="directory for the manifests and releases.yaml")
    p.add_argument("--image", help="repository:tag to deploy instead of the profile's chart.image")
    p.add_argument("--stdout", action="store_true", help="print the manifests as one YAML stream (for Tilt)")


def _dry_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the ordered plan and change nothing")


def _serve_args(p: argparse.ArgumentParser) -> None:
    _dry_run_arg(p)
    p.add_argument("--adapters", type=Path, help="LoRA adapter store (serve.app.adapters.store), e.g. a directory")


def _up_args(p: argparse.ArgumentParser) -> None:
    _serve_args(p)
    p.add_argument("--timings", action="store_true", help="local: print where the bring-up's seconds went")


def cmd_loadtest(a: argparse.Namespace) -> None:
    # --host alone tests that endpoint as is; otherwise the profile (default local) is the target.
    use_profile = a.profile or not a.host
    profile = load_profile(a.profile or "local", model=a.model, port=a.port) if use_profile else None
    opts = run.Options(
        users=a.users, spawn_rate=a.spawn_rate, run_time=a.run_time, report_dir=a.report_dir, shape=a.shape,
        slo_file=a.slo, slo_p95_ms=a.slo_p95_ms, slo_error_rate=a.slo_error_rate, metrics_url=a.metrics_url,
    )  # fmt: skip
    run.run(profile, a.host, opts)


def _loadtest_args(p: argparse.ArgumentParser) -> None:
    d = run.Options  # the defaults live on the options dataclass, once
    p.add_argument("--host", help="test this endpoint (http://host:port) instead of bringing --profile up")
    p.add_argument("--users", type=int, default=d.users, help="concurrent simulated users (default %(default)s)")
    p.add_argument("--spawn-rate", type=float, default=d.spawn_rate, help="users started per second (%(default)s)")
    p.add_argument("--run-time", default=d.run_time, help="how long: 30s, 2m, 1h30m (default %(default)s)")
    p.add_argument("--report-dir", type=Path, default=d.report_dir, help="where the report goes")
    p.add_argument("--shape", default=d.shape, choices=SHAPE_NAMES, help="load shape (loadtest/shapes.py)")
    p.add_argument("--slo", type=Path, default=d.slo_file, help="SLO file (default loadtest/slo.yaml)")
    p.add_argument("--slo-p95-ms", type=float, help="override the p95 budget (ms)")
    p.add_argument("--slo-error-rate", type=float, help="override the error-rate budget (0..1)")
    p.add_argument("--metrics-url", help="Prometheus endpoint for the server_* figures (local profiles: their own)")


def cmd_bench(a: argparse.Namespace) -> None:
    options = bench.BenchOptions(
        models=a.models, duration_s=a.duration, report_dir=a.report_dir, adapters=a.adapters,
        device=a.device, steps=a.steps, size=a.size, shape=a.shape, compile=a.compile,
    )  # fmt: skip
    bench.run(options)


def _bench_args(p: argparse.ArgumentParser) -> None:
    d = bench.BenchOptions
    p.add_argument("--models", default=d.models, help="generated models, comma-separated (%(default)s)")
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds per throughput run (%(default)s)")
    p.add_argument("--report-dir", type=Path, default=d.report_dir, help="summary.json goes here")
    p.add_argument("--adapters", type=int, default=d.adapters, help="also bench N LoRA adapters (docs/adapters.md)")
    p.add_argument("--device", default=d.device, choices=("cpu", "cuda"), help="cuda: fp16 and the GPU option sweep")
    p.add_argument("--steps", type=int, help="denoising steps for every model (default: each model's own)")
    p.add_argument("--size", type=int, help="image side in px for every model (default: each model's own)")
    p.add_argument("--shape", default=d.shape, help="served replicas x threads, e.g. 2x1 (default: from the raw sweep)")
    p.add_argument("--compile", action="store_true", help="GPU option sweep: also torch.compile the UNet (slow)")


def cmd_metrics(a: argparse.Namespace) -> None:
    metrics_command.run(load_profile(a.profile), a.url)


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a Prometheus endpoint to read instead of the local profile's, e.g. a port-forward")


def cmd_reliability(a: argparse.Namespace) -> None:
    profile = load_profile(a.profile, model=a.model)
    options = runner.Options(report_dir=a.report_dir, fuzz_cases=a.fuzz_cases, overload_s=a.overload_s,
                             phases=tuple(a.phases.split(",")), seed=a.seed, soak_s=a.soak_s,
                             openapi_examples=a.openapi_examples)  # fmt: skip
    path, failed = runner.run(profile, options)
    print((path.parent / "summary.md").read_text(), flush=True)
    if failed:
        raise ReliabilityError(f"{len(failed)} goal(s) not met: {'; '.join(failed)} (report: {path})")
    print(f"all goals met; report: {path}", flush=True)


def _reliability_args(p: argparse.ArgumentParser) -> None:
    d = runner.Options
    p.add_argument("--report-dir", type=Path, default=d.report_dir, help="summary.json/.md here")
    p.add_argument("--fuzz-cases", type=int, default=d.fuzz_cases, help="generated requests (default %(default)s)")
    p.add_argument("--overload-s", type=float, default=d.overload_s, help="seconds of overload (default %(default)s)")
    p.add_argument("--phases", default=",".join(d.phases), help="comma-separated subset to run")
    p.add_argument("--seed", type=int, default=d.seed, help="Hypothesis seed of the fuzzing")
    p.add_argument("--soak-s", type=float, default=d.soak_s, help="seconds of steady traffic (default %(default)s)")
    p.add_argument("--openapi-examples", type=int, default=d.openapi_examples,
                   help="Schemathesis fuzzing cases per operation (default %(default)s)")  # fmt: skip


EXTRA_ARGS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "reliability": _reliability_args,
    "loadtest": _loadtest_args,
    "metrics": _metrics_args,
    "bench": _bench_args,
    "up": _up_args,
    "down": _dry_run_arg,
    "dev": _serve_args,
    "cloud": _dry_run_arg,
    "doctor": _doctor_args,
    "render": _render_args,
    "train": add_args,
    "pipeline": command.add_args,
    "fetch-schemas": _fetch_schemas_args,
}

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str]] = {
    "up": (cmd_up, "bring a profile up detached; prints the endpoint once ready"),
    "down": (cmd_down, "stop what up or dev started for a profile (idempotent)"),
    "dev": (cmd_dev, "foreground dev loop with hot reload of services/"),
    "cloud": (cmd_cloud, "up on EKS (default profile eks): eksctl, ECR image, add-ons, chart"),
    "doctor": (cmd_doctor, "check in seconds what a profile needs (tools, Docker, GPU driver, AWS quotas)"),
    "render": (cmd_render, "render charts/dogbooth for a profile into --output, plus releases.yaml"),
    "tilt-config": (cmd_tilt_config, "what the Tiltfile builds, deploys, syncs and forwards, as JSON"),
    "train": (cmd_train, "DreamBooth fine-tune here (local) or as a cluster Job; --model is the base"),
    "pipeline": (cmd_pipeline, "fine-tune pipeline: prepare, train, validate, gate, deploy (local or Argo)"),
    "loadtest": (cmd_loadtest, "Locust load test of /imagine with report, plot and SLO gate (loadtest/)"),
    "metrics": (cmd_metrics, "one screen of a stack's metrics: Serve's requests, batches, timings, admission, RSS"),
    "bench": (cmd_bench, "serving efficiency: raw pipeline vs dogbooth vs the anchor app, side by side"),
    "reliability": (cmd_reliability, "fuzzing, overload, replica kill, training kill and auth checks, with goals"),
    "fetch-schemas": (cmd_fetch_schemas, "download the pinned KubeRay/Argo CRDs and JupyterHub schema"),
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dogbooth")
    sub = root.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        _profile_args(p, default={"dev": None, "cloud": "eks", "loadtest": None}.get(name, "local"))
        if name in EXTRA_ARGS:
            EXTRA_ARGS[name](p)
    return root


def _raise_keyboard_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # teardown runs on SIGTERM too
    # A shell without job control starts background jobs with SIGINT ignored; Ctrl-C must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command][0](args)
    except DogboothError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
