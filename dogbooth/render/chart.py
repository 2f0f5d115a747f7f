"""Our Helm chart, driven from Python: profile -> values -> manifests, with the real Helm engine.

`chart_values` is the one hop from a profile to `charts/dogbooth/values.yaml` keys; the Serve
config goes in untouched as `serveConfig` (the chart embeds it as serveConfigV2). `render` runs
Helm's own template engine (helm-python-sdk, no helm binary) and writes one YAML file per template.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from dogbooth.core.errors import ChartError, ProfileError
from dogbooth.core.names import NAMESPACE, RELEASE_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.render import jupyterhub, k8svalidate
from dogbooth.render.argo import workflow_values
from dogbooth.render.releases import (
    ALB_INGRESS_CLASS,
    DASHBOARD_LABEL,
    MONITORING_NAMESPACE,
    ingress_controller,
    releases_for,
)
from dogbooth.render.serveconfig import serve_config
from dogbooth.settings.chart import ChartSettings
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.render.chart")

CHART_DIR = REPO_ROOT / "charts" / "dogbooth"
_CACHE_KIND = {"host_path": "hostPath", "pvc": "pvc", "ephemeral": "ephemeral"}


def settings(profile: Profile) -> ChartSettings:
    if profile.chart is None:
        raise ProfileError(f"{profile.source}: chart: missing; platform {profile.platform} has no Helm chart")
    return profile.chart


def _split_image(image: str) -> tuple[str, str]:
    """`repo[:port]/name:tag` -> (`repo[:port]/name`, `tag`); a digest or missing tag is refused."""
    name, _, tag = image.rpartition(":")
    if "@" in image or not name or "/" in tag:
        raise ChartError(f"--image {image!r}: give repository:tag with a pinned tag, e.g. dogbooth-serve:0.1.0-cpu")
    if tag == "latest":
        raise ChartError(f"--image {image!r}: `latest` is not a pinned tag")
    return name, tag


def _resources(r: Any) -> dict[str, Any]:
    return r.model_dump()


def _ingress(profile: Profile) -> dict[str, Any]:
    """Our Ingress: ingress-nginx's class on kind; on eks the AWS Load Balancer Controller's (an ALB)."""
    ingress, controller = settings(profile).ingress, ingress_controller(profile)
    if controller == "alb" and ingress.class_name != ALB_INGRESS_CLASS:
        raise ProfileError(
            f"{profile.source}: chart.ingress.class_name: must be {ALB_INGRESS_CLASS} on eks, the IngressClass "
            "of the AWS Load Balancer Controller (no other ingress controller is installed there)"
        )
    return {
        "enabled": ingress.enabled,
        "className": ingress.class_name,
        "host": ingress.host or "",
        "controller": controller,
        "internal": profile.cluster is not None and profile.cluster.addons.ingress_internal,
    }


def _monitoring(profile: Profile) -> dict[str, Any]:
    """The PodMonitor and dashboard ConfigMaps: on where the profile installs kube-prometheus-stack."""
    name, value = DASHBOARD_LABEL
    enabled = profile.cluster is not None and profile.cluster.addons.monitoring
    return {"enabled": enabled, "dashboardLabel": {"name": name, "value": value}}


def _metrics_namespace(profile: Profile) -> str:
    """Who may scrape Ray's exporters through the NetworkPolicy: the profile's choice, else our Prometheus."""
    chosen = settings(profile).network_policy.metrics_namespace
    if chosen:
        return chosen
    return MONITORING_NAMESPACE if _monitoring(profile)["enabled"] else ""


def chart_values(profile: Profile, *, image: str | None = None, code_revision: str = "image") -> dict[str, Any]:
    """The chart values for `profile`; `image` (repository:tag) overrides the profile's image."""
    c = settings(profile)
    repository, tag = _split_image(image) if image else (c.image.repository, c.image.tag)
    w, cache = c.worker, c.model_cache
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": c.image.pull_policy},
        "serveConfig": serve_config(profile, code_revision),
        "head": {"resources": _resources(c.head.resources)},
        "worker": {
            "groupName": "serve",
            "replicas": w.replicas,
            "minReplicas": w.min_replicas,
            "maxReplicas": w.max_replicas,
            "gpus": w.gpus,
            "resources": _resources(w.resources),
            "tolerations": [t.model_dump(exclude_none=True) for t in w.tolerations],
            "nodeSelector": dict(w.node_selector),
            "runtimeClassName": w.runtime_class_name or "",
        },
        "upgradeStrategy": c.upgrade_strategy,
        "modelCache": {
            "kind": _CACHE_KIND[cache.kind],
            "hostPath": cache.host_path or "",
            "size": cache.size,
            "storageClass": cache.storage_class or "",
            "accessMode": cache.access_mode,
            "mountPath": cache.mount_path,
        },
        "ingress": _ingress(profile),
        "apiKey": {
            "enabled": c.api_key.enabled,
            "envName": profile.serve.app.api_key_env,
            "secretName": c.api_key.secret.secret_name,
            "secretKey": c.api_key.secret.secret_key,
        },
        "hfToken": {
            "secretName": c.hf_token.secret_name if c.hf_token else "",
            "secretKey": c.hf_token.secret_key if c.hf_token else "token",
        },
        "networkPolicy": {
            "enabled": c.network_policy.enabled,
            "operatorNamespace": c.network_policy.operator_namespace,
            "metricsNamespace": _metrics_namespace(profile),
        },
        "rayTokenAuth": c.ray_token_auth,
        "monitoring": _monitoring(profile),
        "workflow": workflow_values(profile),  # issue 7: dogbooth/render/argo.py
        "jupyterhub": jupyterhub.chart_values(profile),  # issue 7: dogbooth/render/jupyterhub.py
    }


def lint(values: dict[str, Any], *, namespace: str = NAMESPACE) -> list[str]:
    """`helm lint --strict` findings for these values (warnings included); empty when clean."""
    import helm_python

    report = helm_python.lint(str(CHART_DIR), values, strict=True, namespace=namespace)
    findings = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    return findings + list(report.get("errors") or [])


def render_manifests(values: dict[str, Any], *, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered YAML text (templates that render to nothing are left out)."""
    import helm_python

    try:
        with helm_python.Chart.load(str(CHART_DIR)) as chart:
            chart.validate_schema(values)
            rendered = chart.render(values, name=RELEASE_NAME, namespace=namespace, is_install=True)
    except helm_python.HelmError as e:
        raise ChartError(f"helm could not render {CHART_DIR}: {e}") from e
    return {path: text for path, text in sorted(rendered.items()) if text.strip()}


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects in rendered templates (NOTES.txt excluded)."""
    docs: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith(".txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def _file_name(template: str) -> str:
    return Path(template).name.removesuffix(".tpl")


def render(profile: Profile, output_dir: Path, *, image: str | None = None, code_revision: str = "image") -> list[Path]:
    """Render the chart for `profile` into `output_dir`, one YAML file per template; returns the paths."""
    values = chart_values(profile, image=image, code_revision=code_revision)
    namespace = settings(profile).namespace
    rendered = render_manifests(values, namespace=namespace)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            continue
        path = output_dir / _file_name(template)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text.lstrip("-\n") if text.startswith("---") else text)
        tmp.replace(path)
        written.append(path)
    # A template that renders to nothing now (e.g. the PVC after switching profiles) must not leave
    # its old file behind for `kubectl apply -f DIR` to pick up.
    for source in (CHART_DIR / "templates").glob("*.yaml"):
        stale = output_dir / source.name
        if stale not in written and stale.exists():
            stale.unlink()
            log.info("removed %s: its template renders nothing for profile %s", stale, profile.name)
    log.info("rendered %d manifest file(s) for profile %s into %s", len(written), profile.name, output_dir)
    return written


def render_stdout(profile: Profile, *, image: str | None = None) -> str:
    """All manifests as one multi-document YAML stream (what Tilt's k8s_yaml reads)."""
    values = chart_values(profile, image=image)
    rendered = render_manifests(values, namespace=settings(profile).namespace)
    return "\n---\n".join(t.strip().removeprefix("---").strip() for p, t in rendered.items() if not p.endswith(".txt"))


def validate(objects: list[dict[str, Any]]) -> None:
    """Schema-check rendered objects; custom resources only where the pinned CRDs are present."""

    skipped, checked = [], []
    for obj in objects:
        if obj.get("kind") in k8svalidate.CRD_FILES and k8svalidate.schema_dir() is None:
            skipped.append(obj["kind"])
            continue
        k8svalidate.validate_manifest(obj)
        checked.append(obj["kind"])
    log.info(
        "schema-valid: %s (custom resources against %s, the rest against Kubernetes %s)",
        ", ".join(checked),
        k8svalidate.schema_dir(),
        k8svalidate.KUBERNETES_VERSION,
    )
    if skipped:
        log.warning(
            "not validated (no pinned CRDs here; see `nox -s fetch_schemas`): %s",
            ", ".join(sorted(set(skipped))),
        )


def write_releases(profile: Profile, output_dir: Path) -> Path:
    """`output_dir/releases.yaml`: the add-on releases (dogbooth.render.releases) this profile installs."""

    path = output_dir / "releases.yaml"
    tmp = path.with_suffix(".tmp")
    releases = [r.to_dict() for r in releases_for(profile)]
    header = f"# Add-on releases of profile {profile.name}, in install order (dogbooth/render/releases.py).\n"
    tmp.write_text(header + yaml.safe_dump(releases, sort_keys=False))
    tmp.replace(path)
    return path


def render_all(profile: Profile, output_dir: Path, *, image: str | None = None) -> list[Path]:
    """What `python -m dogbooth render` writes: validated manifests, then releases.yaml."""
    written = render(profile, output_dir, image=image)
    validate([obj for path in written for obj in yaml.safe_load_all(path.read_text()) if obj])
    return [*written, write_releases(profile, output_dir)]
