"""Helm releases from Python through pyhelm3, with dogbooth's error rules.

pyhelm3 runs the helm binary asynchronously; on cancellation (Ctrl-C reaches `asyncio.run` as a
cancelled task) it terminates the helm process. Its errors become `CommandFailed` with helm's
stderr, so every failure reads the same whichever tool caused it.

pyhelm3 skips an upgrade when the deployed revision has the same chart name, chart version and
values (`Client.should_install_or_upgrade_release`). For a chart from this repository that misses
every template edit, so a local chart's content hash goes into the revision's description
(`helm upgrade --description dogbooth.io/chart-hash=<hash>`, shown by `helm history`) and a
different hash upgrades too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dogbooth.core.errors import CommandFailed
from dogbooth.render.releases import Release

log = logging.getLogger("dogbooth.platforms.helm")
T = TypeVar("T")

CHART_HASH_KEY = "dogbooth.io/chart-hash"


def chart_hash(chart_dir: Path) -> str:
    """Content hash of a local chart: every file's path (relative to the chart) and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in chart_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(chart_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def chart_description(chart_dir: Path) -> str:
    """The revision description that records which content of a local chart a release was made from."""
    return f"{CHART_HASH_KEY}={chart_hash(chart_dir)}"


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster: a kubeconfig file (eks: written by eksctl) and/or a context (kind-<name>)."""

    kubeconfig: Path | None = None
    context: str | None = None

    def kubectl_args(self) -> list[str]:
        args = []
        if self.kubeconfig is not None:
            args += ["--kubeconfig", str(self.kubeconfig)]
        if self.context is not None:
            args += ["--context", self.context]
        return args


def _run(what: list[str], coro: Coroutine[Any, Any, T]) -> T:
    import pyhelm3.errors

    log.info("$ %s", " ".join(what))
    try:
        return asyncio.run(coro)
    except pyhelm3.errors.Error as e:
        raise CommandFailed(what, e.returncode, e.stderr.decode(errors="replace")) from e


class Helm:
    """install-or-upgrade and uninstall of releases against one cluster."""

    def __init__(self, target: KubeTarget, *, timeout: str = "10m") -> None:
        import pyhelm3

        self.target = target
        self.timeout = timeout
        self.client = pyhelm3.Client(kubeconfig=target.kubeconfig, kubecontext=target.context, default_timeout=timeout)

    def ensure(self, release: Release, *, chart_path: Path | None = None) -> None:
        """Install or upgrade `release` (from `chart_path` when given, a local chart) and wait for it.

        Nothing happens when the deployed revision has the same chart, values and (for a local
        chart) chart content; a failed or pending revision is always replaced (pyhelm3's rules).
        """
        ref: str | Path = chart_path if chart_path is not None else release.chart
        repo = None if chart_path is not None else release.repo
        version = None if chart_path is not None else release.version
        description = chart_description(chart_path) if chart_path is not None else None

        async def go() -> None:
            chart = await self.client.get_chart(ref, repo=repo, version=version)
            current = await self.client.get_proceedable_revision(
                release.name, namespace=release.namespace, timeout=self.timeout
            )
            stale = await self.client.should_install_or_upgrade_release(current, chart, release.values)
            if not stale and current is not None and description is not None and current.description != description:
                log.info("chart %s changed since revision %d (%s)", ref, current.revision, current.description)
                stale = True
            if not stale and current is not None:
                log.info(
                    "release %s is at revision %d with this chart and these values", release.name, current.revision
                )
                return
            await self.client.install_or_upgrade_release(
                release.name,
                chart,
                release.values,
                namespace=release.namespace,
                create_namespace=True,
                atomic=False,
                description=description,
                wait=True,
                timeout=self.timeout,
            )

        what = ["helm", "upgrade", "--install", release.name, str(ref), "--namespace", release.namespace]
        if version:
            what += ["--repo", str(repo), "--version", version]
        if description:
            what += ["--description", description]
        _run(what + ["--wait"], go())

    def uninstall(self, name: str, namespace: str) -> None:
        """Uninstall and wait for the release's resources to go; a missing release is not an error."""
        what = ["helm", "uninstall", name, "--namespace", namespace, "--wait"]
        _run(what, self.client.uninstall_release(name, namespace=namespace, wait=True, timeout=self.timeout))
