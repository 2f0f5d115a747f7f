"""charts/dogbooth/values.yaml holds the chart's own knobs only: nothing a profile decides is restated there."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
import yaml

from dogbooth.render import chart
from dogbooth.settings import profiles

CLUSTER_PROFILES = ("kind-cpu", "kind-gpu", "eks")


def _leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _has(values: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_values_yaml_restates_nothing_the_profiles_generate() -> None:
    defaults = yaml.safe_load((chart.CHART_DIR / "values.yaml").read_text())
    generated = [chart.chart_values(profiles.load(name)) for name in CLUSTER_PROFILES]
    restated = [".".join(p) for p in _leaves(defaults) if any(_has(v, p) for v in generated)]
    assert restated == []


def test_without_the_generated_values_helm_names_what_is_missing() -> None:
    with pytest.raises(helm_python.HelmError) as failure, helm_python.Chart.load(str(chart.CHART_DIR)) as c:
        c.validate_schema({})
    for key in ("serveConfig", "image", "worker", "networkPolicy", "jupyterhub"):
        assert key in str(failure.value)


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
def test_the_generated_values_and_the_defaults_render(name: str) -> None:
    rendered = chart.render_manifests(chart.chart_values(profiles.load(name)))
    kinds = {obj["kind"] for obj in chart.manifests(rendered)}
    assert {"RayService", "Ingress", "NetworkPolicy"} <= kinds
