"""The Argo Workflows add-on and the chart's WorkflowTemplate dogbooth-finetune, against the pinned CRDs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from dogbooth import cli
from dogbooth.render import argo, chart, k8svalidate
from dogbooth.render.releases import releases_for
from dogbooth.render.serveconfig import serve_config
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile


def _crd(kind: str) -> Any:
    try:
        return k8svalidate.crd_path(kind)
    except k8svalidate.SchemasMissing as e:
        pytest.skip(f"no pinned Argo CRDs: {e}")


def _with_argo(name: str) -> Profile:
    data = profiles.load(name).model_dump()
    data["cluster"]["addons"]["argo_workflows"] = True
    return Profile.model_validate(data)


def _objects(profile: Profile) -> list[dict[str, Any]]:
    rendered = chart.render_manifests(chart.chart_values(profile), namespace="dogbooth")
    return [
        o
        for p, t in rendered.items()
        if p.endswith("workflowtemplate-finetune.yaml")
        for o in yaml.safe_load_all(t)
        if o
    ]


def _template(profile: Profile) -> dict[str, Any]:
    return next(o for o in _objects(profile) if o["kind"] == "WorkflowTemplate")


def _by_name(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in template["spec"]["templates"]}


@pytest.mark.parametrize("name", ["eks", "kind-cpu", "kind-gpu"])
def test_workflowtemplate_validates_against_the_argo_crd(name: str) -> None:
    profile = profiles.load(name) if name == "eks" else _with_argo(name)
    objects = _objects(profile)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "WorkflowTemplate"] == ["dogbooth-finetune"]
    for obj in objects:
        if obj["kind"] == "WorkflowTemplate":
            k8svalidate.validate_against_crd(obj, _crd("WorkflowTemplate"))
        else:
            k8svalidate.validate_k8s(obj)


def test_the_crd_check_catches_a_misspelt_field() -> None:
    template = _template(profiles.load("eks"))
    template["spec"]["templates"][1]["containr"] = template["spec"]["templates"][1].pop("container")
    with pytest.raises(k8svalidate.ManifestInvalid, match="containr"):
        k8svalidate.validate_against_crd(template, _crd("WorkflowTemplate"))


def test_steps_parameters_and_gpu() -> None:
    template = _template(profiles.load("eks"))
    steps = [group[0]["name"] for group in _by_name(template)["finetune"]["steps"]]
    assert steps == ["prepare", "train", "validate", "gate", "deploy", "wait-ready"]
    params = {p["name"] for p in template["spec"]["arguments"]["parameters"]}
    assert {"base-model", "instance-dir", "steps", "threshold"} <= params
    templates = _by_name(template)
    for name in ("train", "validate"):
        assert templates[name]["container"]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert templates[name]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert templates["validate"]["outputs"]["parameters"][0]["valueFrom"]["path"] == "/tmp/score"
    gate_args = templates["gate"]["container"]["args"]
    assert gate_args == [
        "--score={{inputs.parameters.score}}",
        "--threshold={{workflow.parameters.threshold}}",
    ]


def test_artifacts_on_the_model_volume_and_deploy_patches_only_the_model() -> None:
    profile = _with_argo("kind-cpu")  # shared cache: the workers read the export from the volume
    template = _template(profile)
    templates = _by_name(template)
    export = "/home/ray/cache/models/{{workflow.parameters.output-name}}"
    assert f"--output={export}" in templates["train"]["container"]["args"]
    volume = template["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == "dogbooth-model-cache"
    patch = yaml.safe_load(templates["deploy"]["resource"]["manifest"])
    assert templates["deploy"]["resource"]["action"] == "patch" and patch["metadata"]["name"] == "dogbooth"
    expected = serve_config(profile)
    expected["applications"][0]["args"]["model"] = export
    assert yaml.safe_load(patch["spec"]["serveConfigV2"]) == expected
    assert f"--model={export}" in templates["wait-ready"]["container"]["args"]


def test_per_worker_caches_deploy_through_the_hub() -> None:
    templates = _by_name(_template(profiles.load("eks")))
    assert "--require-hub-repo" in templates["prepare"]["container"]["args"]
    patch = yaml.safe_load(templates["deploy"]["resource"]["manifest"])
    assert yaml.safe_load(patch["spec"]["serveConfigV2"])["applications"][0]["args"]["model"] == (
        "{{workflow.parameters.hub-repo}}"
    )


def test_rbac_is_scoped_to_our_rayservice() -> None:
    role = next(o for o in _objects(profiles.load("eks")) if o["kind"] == "Role")
    ray_rule = next(r for r in role["rules"] if r["apiGroups"] == ["ray.io"])
    assert ray_rule == {
        "apiGroups": ["ray.io"],
        "resources": ["rayservices"],
        "resourceNames": ["dogbooth"],
        "verbs": ["get", "patch"],
    }


def test_argo_release_is_pinned_and_behind_the_switch() -> None:
    (release,) = [r for r in releases_for(profiles.load("eks")) if r.name == "argo-workflows"]
    assert release.version == argo.ARGO_CHART_VERSION and release.values["images"]["tag"] == argo.ARGO_VERSION
    assert release.values["controller"]["workflowNamespaces"] == ["dogbooth"]
    assert not any(r.name == "argo-workflows" for r in releases_for(profiles.load("kind-cpu")))
    assert _objects(profiles.load("kind-cpu")) == []


def test_submitted_workflow_validates_and_dry_run_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    request = argo.SubmitRequest(
        steps=800, threshold=0.75, scorer="clip:openai/clip-vit-base-patch32", hub_repo="me/sks-dog"
    )
    workflow = argo.workflow(profiles.load("eks"), request)
    k8svalidate.validate_against_crd(workflow, _crd("Workflow"))
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params["steps"] == "800" and params["threshold"] == "0.75" and params["hub-repo"] == "me/sks-dog"
    assert cli.main(["pipeline", "--profile", "eks", "--dry-run", "--hub-repo", "me/x", "--steps", "10"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["spec"]["workflowTemplateRef"]["name"] == "dogbooth-finetune"
    assert cli.main(["pipeline", "--profile", "kind-cpu", "--dry-run"]) == 1  # no Argo there: a clear error
    assert "argo_workflows is false" in capsys.readouterr().err
