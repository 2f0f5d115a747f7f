"""Rolling a kind RayService onto a rebuilt image (upgradeStrategy None: KubeRay won't do it)."""

from __future__ import annotations

from typing import Any

from dogbooth.platforms import dispatch, roll
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile


def cluster_spec(image: str, workers: int = 1) -> dict[str, Any]:
    pod = {"template": {"spec": {"containers": [{"name": "ray", "image": image}]}}}
    return {"headGroupSpec": pod, "workerGroupSpecs": [pod] * workers}


def rayservice(image: str, strategy: str = "None") -> dict[str, Any]:
    return {
        "metadata": {"name": "dogbooth"},
        "spec": {"upgradeStrategy": {"type": strategy}, "rayClusterConfig": cluster_spec(image)},
    }


def raycluster(name: str, image: str, *, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "ownerReferences": [{"kind": "RayService", "name": "dogbooth"}]}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T21:00:00Z"
    return {"metadata": metadata, "spec": cluster_spec(image)}


class FakeKube:
    """The four calls roll makes, over one namespace's objects."""

    def __init__(self, service: dict[str, Any], clusters: list[dict[str, Any]]) -> None:
        self.service, self.clusters, self.deleted = service, clusters, []  # type: ignore[var-annotated]

    def rayservice_names(self, namespace: str) -> list[str]:
        return ["dogbooth"]

    def rayservice(self, namespace: str, name: str) -> dict[str, Any]:
        return self.service

    def rayclusters_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.clusters

    def delete_raycluster(self, namespace: str, name: str) -> None:
        self.deleted.append(name)


def test_images_lists_head_then_workers() -> None:
    assert roll.images(cluster_spec("a:1", workers=2)) == ["a:1", "a:1", "a:1"]


def test_a_cluster_on_an_older_image_is_rolled_once() -> None:
    kube = FakeKube(rayservice("serve:new"), [raycluster("rc-old", "serve:old"), raycluster("rc-new", "serve:new")])
    assert roll.roll_once(kube, "dogbooth") == ["rc-old"]  # type: ignore[arg-type]
    assert kube.deleted == ["rc-old"]


def test_nothing_is_rolled_when_images_match_or_a_delete_is_under_way() -> None:
    kube = FakeKube(rayservice("serve:new"), [raycluster("rc", "serve:new"), raycluster("going", "x", deleting=True)])
    assert roll.roll_once(kube, "dogbooth") == []  # type: ignore[arg-type]


def test_newcluster_is_left_to_kuberay() -> None:
    kube = FakeKube(rayservice("serve:new", strategy="NewCluster"), [raycluster("rc-old", "serve:old")])
    assert roll.roll_once(kube, "dogbooth") == []  # type: ignore[arg-type]


def test_kind_up_rolls_after_installing_the_chart_only_under_none() -> None:
    titles = [s.title for s in dispatch.build_plan("up", profiles.load("kind-cpu")).steps]
    rolled = titles.index("roll the RayCluster onto the new image (KubeRay won't under upgradeStrategy None)")
    assert titles[rolled - 1].startswith("helm install-or-upgrade dogbooth")
    assert titles[rolled + 1].startswith("wait for the RayService")
    data = profiles.load("kind-cpu").model_dump()
    data["chart"]["upgrade_strategy"] = "NewCluster"
    data["cluster"]["kind"]["memory_budget"] = "16Gi"  # two RayClusters during a rebuild
    newcluster = Profile.model_validate(data)
    assert not any(s.title.startswith("roll") for s in dispatch.build_plan("up", newcluster).steps)
