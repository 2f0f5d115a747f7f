"""Ordered plans: the steps of a bring-up or teardown, printable (`--dry-run`) and executable.

A step is a phase, a title, the lines a dry run prints (commands, configs, release values) and an
action. Values only known at run time (the AWS account, the VPC id) appear as `${name}`: a step
that looks one up stores it in the context, and later steps have it substituted.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dogbooth.core.tools import Runner
from dogbooth.platforms.helm import Helm, KubeTarget
from dogbooth.platforms.kube import Kube
from dogbooth.render.releases import Release

if TYPE_CHECKING:
    from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.platforms.plan")
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


@dataclass
class Context:
    """What steps share while a plan runs."""

    profile: Profile
    target: KubeTarget
    runner: Runner = field(default_factory=Runner)
    values: dict[str, str] = field(default_factory=dict)  # looked up at run time: account, vpc_id, ...
    flags: dict[str, bool] = field(default_factory=dict)  # e.g. cluster_exists, gates later steps

    def resolve(self, obj: Any) -> Any:
        """`obj` with every `${name}` replaced by the looked-up value."""
        if isinstance(obj, str):
            return _PLACEHOLDER.sub(lambda m: self.values[m.group(1)], obj)
        if isinstance(obj, list):
            return [self.resolve(x) for x in obj]
        if isinstance(obj, dict):
            return {k: self.resolve(v) for k, v in obj.items()}
        return obj

    @cached_property
    def helm(self) -> Helm:
        return Helm(self.target)

    @cached_property
    def kube(self) -> Kube:
        return Kube(self.target)


@dataclass(frozen=True)
class Step:
    phase: str
    title: str
    detail: tuple[str, ...]
    action: Callable[[Context], None]
    only_if: str | None = None  # name of a context flag; the step is skipped when it is false


@dataclass(frozen=True)
class Plan:
    name: str
    profile: str
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    def phases(self) -> list[str]:
        return [s.phase for s in self.steps]

    def describe(self) -> str:
        lines = [f"plan `{self.name}` for profile {self.profile}: {len(self.steps)} steps, in order"]
        lines += [f"  note: {n}" for n in self.notes]
        for i, step in enumerate(self.steps, 1):
            gate = f"  (only if {step.only_if})" if step.only_if else ""
            lines.append(f"{i:2d}. [{step.phase}] {step.title}{gate}")
            lines += [f"      {line}" for text in step.detail for line in text.splitlines()]
        return "\n".join(lines)

    def execute(self, ctx: Context) -> None:
        total = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            if step.only_if and not ctx.flags.get(step.only_if, False):
                log.info("[%d/%d] skip: %s (%s is false)", i, total, step.title, step.only_if)
                continue
            log.info("[%d/%d] %s", i, total, step.title)
            step.action(ctx)


def command(
    phase: str,
    title: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    input_label: str = "",
    stream: bool = False,
    capture: str | None = None,
    ok_codes: Sequence[int] = (0,),
    only_if: str | None = None,
    timeout_s: float | None = None,
    show_input: bool = False,
    env: dict[str, str] | None = None,
) -> Step:
    """A step that runs one external command (through the Runner); `capture` stores its stripped stdout.

    `input` goes to the command's stdin; a dry run prints it only with `show_input` (configs, not secrets).
    """
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    shown = "$ " + prefix + shlex.join(argv) + (f"  < {input_label}" if input_label else "")
    detail = (shown,) + ((input,) if input and show_input else ())

    def action(ctx: Context) -> None:
        out = ctx.runner.run(
            ctx.resolve(list(argv)),
            input=ctx.resolve(input) if input else None,
            stream=stream,
            ok_codes=ok_codes,
            timeout_s=timeout_s,
            env=env,
        )
        if capture:
            ctx.values[capture] = out.strip()

    return Step(phase, title, detail, action, only_if)


def release_lines(release: Release) -> tuple[str, ...]:
    return (
        f"release {release.name} -> namespace {release.namespace}",
        f"chart: {release.chart}  repo: {release.repo or '(local)'}  version: {release.version}",
        "values:\n" + _indent(yaml.safe_dump(release.values, sort_keys=False, width=100) if release.values else "{}"),
    )


def install(release: Release, *, chart_path: Path | None = None, only_if: str | None = None) -> Step:
    def action(ctx: Context) -> None:
        resolved = Release(**{**release.to_dict(), "values": ctx.resolve(release.values)})
        ctx.helm.ensure(resolved, chart_path=chart_path)

    title = f"helm install-or-upgrade {release.name} ({release.chart} {release.version})"
    return Step(release.phase, title, release_lines(release), action, only_if)


def uninstall(phase: str, name: str, namespace: str, *, why: str = "", only_if: str | None = None) -> Step:
    def action(ctx: Context) -> None:
        ctx.helm.uninstall(name, namespace)

    detail = (f"$ helm uninstall {name} --namespace {namespace} --wait" + (f"   # {why}" if why else ""),)
    return Step(phase, f"helm uninstall {name}", detail, action, only_if)


def python(
    phase: str,
    title: str,
    detail: Sequence[str],
    action: Callable[[Context], None],
    only_if: str | None = None,
) -> Step:
    return Step(phase, title, tuple(detail), action, only_if)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())
