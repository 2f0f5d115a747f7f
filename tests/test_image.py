"""The serve image's tag follows every file the image copies (issue 11, defect 13).

ECR tags are immutable and kind nodes never pull a tag twice, so a file the Dockerfile copies but
the tag ignores would never reach a cluster.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms.kubesteps import source_hash
from dogbooth.render.image import DOCKERFILE, IMAGE_CONTEXT, image_files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for entry in IMAGE_CONTEXT:
        source, target = REPO_ROOT / entry, tmp_path / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy(source, target)
    return tmp_path


@pytest.mark.parametrize(
    "edited",
    ["training/configs/local.yaml", "training/recipe.py", "services/Dockerfile.dockerignore", "dogbooth/cli.py"],
)
def test_an_edit_to_anything_the_image_copies_changes_the_tag(tree: Path, edited: str) -> None:
    before = source_hash(tree)
    path = tree / edited
    path.write_text(path.read_text() + "\n# edited\n")
    assert source_hash(tree) != before


def test_an_edit_elsewhere_keeps_the_tag(tree: Path) -> None:
    before = source_hash(tree)
    (tree / "docs").mkdir()
    (tree / "docs" / "notes.md").write_text("not in the image")
    (tree / "services" / "__pycache__").mkdir(exist_ok=True)
    (tree / "services" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"cache")
    assert source_hash(tree) == before


def test_the_image_context_is_what_the_dockerfile_copies() -> None:
    copied = re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", DOCKERFILE.read_text(), re.M)
    sources = {src for line in copied for src in line.split()}
    assert sources <= set(IMAGE_CONTEXT)
    allowed = {line[1:].split("/")[0] for line in DOCKERFILE.with_suffix(".dockerignore").read_text().splitlines()}
    assert {entry.split("/")[0] for entry in IMAGE_CONTEXT} <= allowed | {"services"}
    assert any(p.parts[-3:] == ("training", "configs", "local.yaml") for p in image_files())
