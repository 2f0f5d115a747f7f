"""Rendered charts for the chart tests: each cluster profile rendered once per test session."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from dogbooth.render import chart
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile

CLUSTER_PROFILES = [name for name in profiles.available() if profiles.load(name).platform != "local"]
GPU_PROFILES = {"kind-gpu", "eks"}


@dataclass(frozen=True)
class Rendered:
    profile: Profile
    values: dict[str, Any]
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    @property
    def rayservice(self) -> dict[str, Any]:
        (rs,) = self.of_kind("RayService")
        return rs

    def pod_specs(self) -> dict[str, dict[str, Any]]:
        """'head' and 'worker:<group>' -> pod spec."""
        cluster = self.rayservice["spec"]["rayClusterConfig"]
        specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
        for group in cluster.get("workerGroupSpecs", []):
            specs[f"worker:{group['groupName']}"] = group["template"]["spec"]
        return specs

    def containers(self) -> dict[str, dict[str, Any]]:
        """Every container the RayService makes, including the autoscaler sidecar when enabled."""
        found = {f"{pod}/{c['name']}": c for pod, spec in self.pod_specs().items() for c in spec["containers"]}
        autoscaler = self.rayservice["spec"]["rayClusterConfig"].get("autoscalerOptions")
        if self.rayservice["spec"]["rayClusterConfig"].get("enableInTreeAutoscaling"):
            found["head/autoscaler"] = autoscaler
        return found


@functools.cache
def rendered(name: str, image: str | None = None) -> Rendered:
    profile = profiles.load(name)
    values = chart.chart_values(profile, image=image)
    objects = chart.manifests(chart.render_manifests(values, namespace=chart.settings(profile).namespace))
    return Rendered(profile, values, objects)
