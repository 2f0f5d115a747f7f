"""Offline validation of Kubernetes manifests: built-in kinds and our custom resources.

    from dogbooth.render import k8svalidate
    k8svalidate.validate_k8s(job)            # Job, Ingress, ...: kubernetes-validate, strict
    k8svalidate.validate_against_crd(rs, k8svalidate.crd_path("RayService"))   # or WorkflowTemplate, ...
    k8svalidate.validate_manifest(obj)       # either, chosen by kind

Every function raises `ManifestInvalid` naming the object and the failing field, or returns None.
CRDs and other pinned schemas live in `schema_dir()`: `$DOGBOOTH_SCHEMA_DIR`, else `../shared`
beside the repository. `fetch_schemas(dest)` downloads the same pinned files from upstream.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import requests
import yaml

from dogbooth.core.errors import ChartError, DogboothError
from dogbooth.core.paths import REPO_ROOT

log = logging.getLogger("dogbooth.render.k8svalidate")

SCHEMA_DIR_ENV = "DOGBOOTH_SCHEMA_DIR"
# The C loader where PyYAML has it: the RayService CRD alone is 18,000 lines, 3 s in pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KUBERNETES_VERSION = "1.33"  # the oldest minor we run: the kind profiles' pinned node image (docs/kind.md)

_KUBERAY = "https://raw.githubusercontent.com/ray-project/kuberay/v1.7.0/helm-chart/kuberay-operator/crds"
_ARGO = "https://raw.githubusercontent.com/argoproj/argo-workflows/v4.1.2/manifests/base/crds/full"
_JUPYTERHUB = "https://raw.githubusercontent.com/jupyterhub/zero-to-jupyterhub-k8s/4.4.0/jupyterhub"
_PROM_OP = (
    "https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/v0.93.0/example/prometheus-operator-crd"
)
# Relative path under the schema dir -> upstream URL at the pinned tag (see ../shared/README.md).
PINNED_FILES: dict[str, str] = {
    "kuberay-crds/ray.io_rayservices.yaml": f"{_KUBERAY}/ray.io_rayservices.yaml",
    "kuberay-crds/ray.io_rayclusters.yaml": f"{_KUBERAY}/ray.io_rayclusters.yaml",
    "kuberay-crds/ray.io_rayjobs.yaml": f"{_KUBERAY}/ray.io_rayjobs.yaml",
    "argo-crds/argoproj.io_workflows.yaml": f"{_ARGO}/argoproj.io_workflows.yaml",
    "argo-crds/argoproj.io_workflowtemplates.yaml": f"{_ARGO}/argoproj.io_workflowtemplates.yaml",
    "jupyterhub-schema/values.schema.yaml": f"{_JUPYTERHUB}/values.schema.yaml",
    "jupyterhub-schema/values.yaml": f"{_JUPYTERHUB}/values.yaml",
    "prometheus-operator-crds/podmonitors.yaml": f"{_PROM_OP}/monitoring.coreos.com_podmonitors.yaml",
    "prometheus-operator-crds/servicemonitors.yaml": f"{_PROM_OP}/monitoring.coreos.com_servicemonitors.yaml",
}
CRD_FILES: dict[str, str] = {
    "RayService": "kuberay-crds/ray.io_rayservices.yaml",
    "RayCluster": "kuberay-crds/ray.io_rayclusters.yaml",
    "RayJob": "kuberay-crds/ray.io_rayjobs.yaml",
    "Workflow": "argo-crds/argoproj.io_workflows.yaml",
    "WorkflowTemplate": "argo-crds/argoproj.io_workflowtemplates.yaml",
    "PodMonitor": "prometheus-operator-crds/podmonitors.yaml",
    "ServiceMonitor": "prometheus-operator-crds/servicemonitors.yaml",
}


class ManifestInvalid(ChartError):
    """A manifest does not match its schema; the message names the object and the field."""


class SchemasMissing(DogboothError):
    """The pinned schemas are not on this machine; the message says how to get them."""


def schema_dir() -> Path | None:
    """`$DOGBOOTH_SCHEMA_DIR` if set, else `<repo>/../shared` if it exists, else None."""
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    shared = REPO_ROOT.parent / "shared"
    return shared if shared.is_dir() else None


def crd_path(kind: str) -> Path:
    """The pinned CRD file for `kind` (RayService, RayJob, WorkflowTemplate, PodMonitor, ...: CRD_FILES)."""
    base = schema_dir()
    if kind not in CRD_FILES:
        raise ManifestInvalid(f"no pinned CRD for kind {kind!r}; known: {', '.join(CRD_FILES)}")
    if base is None or not (base / CRD_FILES[kind]).is_file():
        where = base or f"${SCHEMA_DIR_ENV} or {REPO_ROOT.parent / 'shared'}"
        raise SchemasMissing(
            f"{CRD_FILES[kind]} not found in {where}; run `nox -s fetch_schemas -- --output DIR` "
            f"and set {SCHEMA_DIR_ENV}=DIR"
        )
    return base / CRD_FILES[kind]


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def _loosen_extensions(schema: Any, *, strict: bool) -> Any:
    """Turn a CRD's structural schema into plain JSON Schema.

    x-kubernetes-* keys are dropped, except that int-or-string becomes an explicit anyOf. With
    `strict`, objects with listed properties reject unknown keys (as `kubectl apply` does with
    server-side field validation) unless the CRD preserves unknown fields there.
    """
    if isinstance(schema, list):
        return [_loosen_extensions(s, strict=strict) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _loosen_extensions(v, strict=strict) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if strict and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_schema(crd_path: Path, version: str, strict: bool) -> dict[str, Any]:
    crd = yaml.load(crd_path.read_text(), Loader=_LOADER)
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served", True):
            if v.get("deprecated") and strict:
                raise ManifestInvalid(f"{crd_path.name}: version {version} is deprecated; use the storage version")
            schema: dict[str, Any] = _loosen_extensions(v["schema"]["openAPIV3Schema"], strict=strict)
            return schema
    served = [v["name"] for v in crd["spec"]["versions"] if v.get("served", True)]
    raise ManifestInvalid(f"{crd_path.name} serves no version {version!r} (it serves {served})")


def validate_against_crd(obj: dict[str, Any], crd_path: Path, *, strict: bool = True) -> None:
    """Validate a custom resource against the CRD's openAPIV3Schema for its apiVersion's version.

    `strict` (the default) also rejects unknown fields and deprecated versions, as the API server
    does for `kubectl apply` with strict field validation; without it unknown fields pass (pruned).
    """
    import jsonschema

    version = str(obj.get("apiVersion", "")).rpartition("/")[2]
    schema = _crd_schema(Path(crd_path), version, strict)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}" for e in errors[:10]]
        raise ManifestInvalid(f"{_name(obj)} does not match {Path(crd_path).name} ({version}):\n" + "\n".join(lines))


def validate_k8s(obj: dict[str, Any], *, kubernetes_version: str = KUBERNETES_VERSION) -> None:
    """Validate a built-in kind (Deployment, Job, Ingress, ...) strictly: unknown fields fail too."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as e:  # a jsonschema.ValidationError
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        raise ManifestInvalid(f"{_name(obj)}: {path}: {e.message[:300]}") from e
    except kubernetes_validate.SchemaNotFoundError as e:
        raise ManifestInvalid(
            f"{_name(obj)}: no Kubernetes {kubernetes_version} schema for {obj.get('apiVersion')} "
            f"{obj.get('kind')}; for a custom resource use validate_against_crd"
        ) from e


def validate_manifest(obj: dict[str, Any]) -> None:
    """Validate one object: a pinned CRD for our custom kinds, the Kubernetes schemas otherwise."""
    kind = obj.get("kind", "")
    if kind in CRD_FILES:
        validate_against_crd(obj, crd_path(kind))
    else:
        validate_k8s(obj)


def fetch_schemas(dest: Path, *, timeout_s: float = 60) -> list[Path]:
    """Download the pinned CRDs and schemas into `dest` (same layout as ../shared); returns the files."""

    written = []
    for rel, url in PINNED_FILES.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("GET %s", url)
        try:
            r = requests.get(url, timeout=timeout_s)
            r.raise_for_status()
        except requests.RequestException as e:
            raise SchemasMissing(f"could not download {url}: {e}") from e
        # A cheap sanity check (parsing all seven files takes seconds): no error page, the right kind.
        is_crd = rel in CRD_FILES.values()
        if (
            not r.text.strip()
            or r.text.lstrip().startswith("<")
            or (is_crd and "kind: CustomResourceDefinition" not in r.text)
        ):
            raise SchemasMissing(f"{url} did not return the expected {'CRD' if is_crd else 'YAML'}")
        with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(r.text)
        Path(tmp.name).replace(target)
        written.append(target)
    log.info("fetched %d file(s) into %s; use them with %s=%s", len(written), dest, SCHEMA_DIR_ENV, dest)
    return written
