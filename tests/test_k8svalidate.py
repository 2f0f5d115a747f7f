"""dogbooth.render.k8svalidate: the pinned-schema lookup and the upstream fetch (served locally here)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dogbooth.render import k8svalidate

SHARED = k8svalidate.REPO_ROOT.parent / "shared"


def test_schema_dir_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(k8svalidate.SCHEMA_DIR_ENV, str(tmp_path))
    assert k8svalidate.schema_dir() == tmp_path
    with pytest.raises(k8svalidate.SchemasMissing, match="nox -s fetch_schemas"):
        k8svalidate.crd_path("RayService")
    monkeypatch.delenv(k8svalidate.SCHEMA_DIR_ENV)
    assert k8svalidate.schema_dir() == (SHARED if SHARED.is_dir() else None)


@pytest.fixture
def upstream() -> Iterator[str]:
    """A local stand-in for raw.githubusercontent.com serving ../shared's copies."""
    if not SHARED.is_dir():
        pytest.skip("../shared absent: nothing to serve as the upstream copy")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SHARED))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_fetch_writes_the_shared_layout(upstream: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(k8svalidate, "PINNED_FILES", {rel: f"{upstream}/{rel}" for rel in k8svalidate.PINNED_FILES})
    written = k8svalidate.fetch_schemas(tmp_path / "schemas")
    assert {p.relative_to(tmp_path / "schemas").as_posix() for p in written} == set(k8svalidate.PINNED_FILES)
    for rel in k8svalidate.PINNED_FILES:
        assert (tmp_path / "schemas" / rel).read_bytes() == (SHARED / rel).read_bytes()
    monkeypatch.setenv(k8svalidate.SCHEMA_DIR_ENV, str(tmp_path / "schemas"))
    assert k8svalidate.crd_path("WorkflowTemplate").is_file()


def test_fetch_failure_names_the_url(upstream: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(k8svalidate, "PINNED_FILES", {"kuberay-crds/x.yaml": f"{upstream}/missing.yaml"})
    with pytest.raises(k8svalidate.SchemasMissing, match="missing.yaml"):
        k8svalidate.fetch_schemas(tmp_path)
    assert not list(tmp_path.rglob("*.yaml"))


def test_pinned_urls_name_the_shared_versions() -> None:
    urls = "\n".join(k8svalidate.PINNED_FILES.values())
    assert "kuberay/v1.7.0/" in urls and "argo-workflows/v4.1.2/" in urls and "zero-to-jupyterhub-k8s/4.4.0/" in urls
    if SHARED.is_dir():
        assert all((SHARED / rel).is_file() for rel in k8svalidate.PINNED_FILES)
