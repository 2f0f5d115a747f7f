"""Rolling a RayService onto a new image where KubeRay won't: `chart.upgrade_strategy: None` (kind).

Under None, KubeRay neither starts a second RayCluster for a new image nor updates the running one
(docs/kind.md, "What a rebuild does"): that is what keeps a rebuild inside kind's memory. The new
image reaches the pods once the old RayCluster is deleted, which KubeRay answers by creating one
from the RayService's current spec. This module does that delete, only for a RayCluster whose
images differ from its RayService's:
- `nox -s up` on kind runs `roll_step` after installing the chart;
- under Tilt, `python -m dogbooth.platforms.roll --watch` runs beside the app and rolls each time
  a rebuilt image lands in the RayService.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from dogbooth.platforms import plan as p
from dogbooth.platforms.helm import KubeTarget
from dogbooth.platforms.kube import Kube

log = logging.getLogger("dogbooth.roll")
WATCH_INTERVAL_S = 5.0


def images(cluster_spec: dict[str, Any]) -> list[str]:
    """The container images of a RayCluster spec (a RayCluster's, or a RayService's rayClusterConfig)."""
    groups = [cluster_spec.get("headGroupSpec", {}), *cluster_spec.get("workerGroupSpecs", [])]
    return [c.get("image", "") for g in groups for c in g.get("template", {}).get("spec", {}).get("containers", [])]


def stale(rayservice: dict[str, Any], clusters: list[dict[str, Any]]) -> list[str]:
    """Names of the RayService's RayClusters that run other images than it asks for (and aren't going)."""
    wanted = images(rayservice["spec"]["rayClusterConfig"])
    return [
        c["metadata"]["name"]
        for c in clusters
        if images(c.get("spec", {})) != wanted and not c["metadata"].get("deletionTimestamp")
    ]


def roll_once(kube: Kube, namespace: str) -> list[str]:
    """Delete every stale RayCluster in `namespace`; the names deleted."""
    deleted = []
    for name in kube.rayservice_names(namespace):
        rayservice = kube.rayservice(namespace, name)
        if rayservice is None or rayservice.get("spec", {}).get("upgradeStrategy", {}).get("type") != "None":
            continue  # NewCluster: KubeRay rolls it itself
        for cluster in stale(rayservice, kube.rayclusters_of(namespace, name)):
            log.info("RayCluster %s/%s runs an older image than RayService %s: deleting it", namespace, cluster, name)
            kube.delete_raycluster(namespace, cluster)
            deleted.append(cluster)
    return deleted


def roll_step(namespace: str) -> p.Step:
    """The plan step: under upgradeStrategy None, a new image needs its old RayCluster deleted."""

    def action(ctx: p.Context) -> None:
        if not roll_once(ctx.kube, namespace):
            log.info("every RayCluster in %s already runs the RayService's images", namespace)

    detail = [
        f"kubernetes API: ray.io/v1 RayClusters owned by a RayService in {namespace} whose images differ "
        "from the RayService's are deleted; KubeRay recreates them from the new spec (upgradeStrategy None)"
    ]
    return p.python("app", "roll the RayCluster onto the new image (KubeRay won't under upgradeStrategy None)",
                    detail, action)  # fmt: skip


def _stop(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dogbooth.platforms.roll", description=__doc__.splitlines()[0])
    parser.add_argument("--context", required=True, help="kube context, e.g. kind-dogbooth")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--watch", action="store_true", help=f"keep rolling, every {WATCH_INTERVAL_S:g} s")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="dogbooth roll: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _stop)
    kube = Kube(KubeTarget(context=a.context))
    try:
        roll_once(kube, a.namespace)
        while a.watch:
            time.sleep(WATCH_INTERVAL_S)  # a watcher's period, not a wait on a condition
            roll_once(kube, a.namespace)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
