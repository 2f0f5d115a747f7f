"""The JupyterHub add-on: z2jh values from the profiles, validated against the pinned chart's schema."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import kubesteps
from dogbooth.platforms.helm import KubeTarget
from dogbooth.render import chart, jupyterhub, k8svalidate
from dogbooth.render.releases import releases_for
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile


def _schema_dir() -> Path:
    base = k8svalidate.schema_dir()
    if base is None or not (base / "jupyterhub-schema" / "values.schema.yaml").is_file():
        pytest.skip("no jupyterhub-schema: set DOGBOOTH_SCHEMA_DIR or run `nox -s fetch_schemas`")
    return base / "jupyterhub-schema"


def _merge(defaults: Any, override: Any) -> Any:
    """Helm's merge of user values over chart defaults: maps merge key by key, anything else replaces."""
    if isinstance(defaults, dict) and isinstance(override, dict):
        merged = dict(defaults)
        for key, value in override.items():
            merged[key] = _merge(defaults.get(key), value) if key in defaults else value
        return merged
    return copy.deepcopy(override)


def _with_hub(name: str, **hub: Any) -> Profile:
    data = profiles.load(name).model_dump()
    data["cluster"]["addons"]["jupyterhub"].update(enabled=True, **hub)
    return Profile.model_validate(data)


def _release_values(profile: Profile) -> dict[str, Any]:
    release = next(r for r in releases_for(profile) if r.name == "jupyterhub")
    assert release.version == jupyterhub.CHART_VERSION == "4.4.0"
    return release.values


def _schema_errors(values: dict[str, Any]) -> list[str]:
    """`values` merged over the chart's defaults, checked against its values schema: one line per error."""
    import jsonschema

    base = _schema_dir()
    schema = yaml.safe_load((base / "values.schema.yaml").read_text())
    defaults = yaml.safe_load((base / "values.yaml").read_text())
    merged = _merge(defaults, values)
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(merged), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors]


PROFILES = {
    "eks": lambda: profiles.load("eks"),
    "kind-cpu": lambda: _with_hub("kind-cpu"),
    "kind-gpu": lambda: _with_hub("kind-gpu"),
    "eks-github": lambda: _with_hub("eks", auth="github", github_org="my-org", load_balancer="internet-facing"),
}


@pytest.mark.parametrize("case", sorted(PROFILES))
def test_merged_values_validate_against_the_z2jh_schema(case: str) -> None:
    assert _schema_errors(_release_values(PROFILES[case]())) == []


def test_the_schema_check_catches_a_wrong_key() -> None:
    values = _release_values(profiles.load("eks"))
    values["singleuser"]["storage"]["capacityy"] = "10Gi"
    assert any("capacityy" in line for line in _schema_errors(values))


def test_on_by_default_in_eks_behind_a_flag_on_kind() -> None:
    assert any(r.name == "jupyterhub" for r in releases_for(profiles.load("eks")))
    for name in ("kind-cpu", "kind-gpu"):
        assert not any(r.name == "jupyterhub" for r in releases_for(profiles.load(name)))
        assert any(r.name == "jupyterhub" for r in releases_for(_with_hub(name)))


def test_gpu_profile_on_eks_and_cpu_profile_on_kind() -> None:
    (gpu,) = _release_values(profiles.load("eks"))["singleuser"]["profileList"]
    override = gpu["kubespawner_override"]
    assert override["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in override["tolerations"]
    (cpu,) = _release_values(_with_hub("kind-cpu"))["singleuser"]["profileList"]
    assert "extra_resource_limits" not in cpu["kubespawner_override"]
    assert "tolerations" not in cpu["kubespawner_override"]


def test_token_notebook_storage_and_load_balancer() -> None:
    profile = profiles.load("eks")
    values = _release_values(profile)
    user = values["singleuser"]
    assert user["extraEnv"]["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "token",
        "optional": True,
    }
    assert user["storage"]["extraVolumes"] == [
        {"name": "dogbooth-notebook", "configMap": {"name": jupyterhub.NOTEBOOK_CONFIGMAP}}
    ]
    assert user["storage"]["type"] == "dynamic" and user["storage"]["capacity"] == "50Gi"
    assert user["storage"]["dynamic"]["storageClass"] == "gp3"
    annotations = values["proxy"]["service"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert next(r for r in releases_for(profile) if r.name == "jupyterhub").owns_load_balancer
    assert _release_values(_with_hub("kind-cpu"))["proxy"]["service"]["type"] == "ClusterIP"


def test_native_auth_with_admin_approval_and_no_fixed_password() -> None:
    hub = _release_values(profiles.load("eks"))["hub"]
    assert hub["config"]["NativeAuthenticator"]["open_signup"] is False
    code = hub["extraConfig"]["dogbooth-auth"]
    compile(code, "hub.extraConfig", "exec")  # the hub would fail to start on a syntax error
    assert "c.JupyterHub.authenticator_class = DogboothAuthenticator" in code
    assert hub["extraVolumes"][0]["secret"]["secretName"] == jupyterhub.ADMIN_SECRET
    assert "DummyAuthenticator" not in yaml.safe_dump(hub)
    assert not {"password", "admin_password"} & set(_keys(hub))  # no password in the values


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(k) for k in node] + [k for v in node.values() for k in _keys(v)]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


def test_github_oauth_reads_its_client_from_a_secret() -> None:
    hub = _release_values(PROFILES["eks-github"]())["hub"]
    assert hub["config"]["GitHubOAuthenticator"]["allowed_organizations"] == ["my-org"]
    assert hub["extraEnv"]["OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == jupyterhub.GITHUB_SECRET


def _hub_objects(profile: Profile) -> list[dict[str, Any]]:
    values = chart.chart_values(profile)
    rendered = chart.render_manifests(values, namespace="dogbooth")
    return [o for o in chart.manifests(rendered) if o["metadata"].get("namespace") == jupyterhub.NAMESPACE]


def test_chart_renders_the_notebook_configmap_and_no_secret() -> None:
    objects = _hub_objects(profiles.load("eks"))
    assert [o["kind"] for o in objects] == ["ConfigMap"]  # the chart carries no secrets
    notebook = yaml.safe_load(objects[0]["data"][jupyterhub.NOTEBOOK_FILE])  # JSON is YAML
    assert notebook["cells"] and notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert notebook == yaml.safe_load((REPO_ROOT / "notebooks" / "dogbooth.ipynb").read_text())
    k8svalidate.validate_k8s(objects[0])
    assert _hub_objects(profiles.load("kind-cpu")) == []  # off by default on kind


class _FakeKube:
    """Records ensure_secret calls; stands in for the cluster this machine does not have."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}

    def ensure_secret(self, namespace: str, name: str, key: str, make_value: Callable[[], str]) -> bool:
        if (namespace, name) in self.secrets:
            return False
        self.secrets[(namespace, name)] = {key: make_value()}
        return True


def test_admin_password_is_generated_into_a_secret_once() -> None:
    step = kubesteps.admin_secret_step(profiles.load("eks"))
    assert step is not None and "never logged" in step.detail[0]
    passwords = []
    for _ in range(2):  # two clusters
        kube = _FakeKube()
        step.action(SimpleNamespace(kube=kube, target=KubeTarget(context="kind-dogbooth")))  # type: ignore[arg-type]
        first = dict(kube.secrets)
        step.action(SimpleNamespace(kube=kube, target=KubeTarget()))  # type: ignore[arg-type]  # a re-run keeps it
        assert kube.secrets == first
        (value,) = first[(jupyterhub.NAMESPACE, jupyterhub.ADMIN_SECRET)].values()
        passwords.append(value)
    assert len(passwords[0]) >= 32 and passwords[0] != passwords[1]  # random, never a fixed value
    assert kubesteps.admin_secret_step(PROFILES["eks-github"]()) is None
    assert kubesteps.admin_secret_step(profiles.load("kind-cpu")) is None
