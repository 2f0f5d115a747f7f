"""The version tables in docs/kind.md, docs/tilt.md and docs/eks.md state dogbooth/core/tools.py's minimums."""

from __future__ import annotations

import re

import pytest

from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import TOOLS
from dogbooth.render.image import VARIANTS, driver_text

DOCS = {
    "tilt.md": ("tilt", "kind", "ctlptl", "kubectl", "helm", "docker"),
    "eks.md": ("eksctl", "kubectl", "helm", "docker"),
}


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_each_tool_row_gives_the_minimum_the_preflight_checks(doc: str) -> None:
    text = (REPO_ROOT / "docs" / doc).read_text()
    for name in DOCS[doc]:
        want = ".".join(map(str, TOOLS[name].minimum))
        assert re.search(rf"^\| {name}\b[^|\n]*\| {re.escape(want)} or newer", text, re.M), f"{doc}: {name} {want}"


@pytest.mark.parametrize("doc", ["tilt.md", "eks.md", "kind.md"])
def test_the_gpu_driver_minimum_is_the_gpu_images(doc: str) -> None:
    (gpu,) = [v for v in VARIANTS.values() if v.min_driver]
    assert gpu.min_driver is not None and driver_text(gpu.min_driver) in (REPO_ROOT / "docs" / doc).read_text()
