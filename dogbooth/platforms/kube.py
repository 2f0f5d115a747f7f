"""Waiting on the cluster through the Kubernetes API, and saying what is stuck when it takes too long.

Every wait is bounded. When one times out, `diagnose` reads the namespace's pods and the
RayService's status and names the cause a user can act on: a pod Pending because no node has a
free GPU, an image that cannot be pulled, a crashing container, a Serve application that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import requests

from dogbooth.core.polling import poll
from dogbooth.platforms.helm import KubeTarget


class Kube:
    """A kubernetes-client session for one cluster; objects are handled as plain dicts."""

    def __init__(self, target: KubeTarget) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(
            config_file=str(target.kubeconfig) if target.kubeconfig else None, context=target.context
        )
        self.core = client.CoreV1Api(api)
        self.net = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._api = api

    def _dicts(self, result: Any) -> list[dict[str, Any]]:
        return [self._api.sanitize_for_serialization(item) for item in result.items]

    def rayservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", name),
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def rayservice_names(self, namespace: str) -> list[str]:
        found = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayservices"),
        )
        return [item["metadata"]["name"] for item in found.get("items", [])]

    def rayclusters_of(self, namespace: str, rayservice: str) -> list[dict[str, Any]]:
        """The RayClusters a RayService owns (its active one, and a pending one during an upgrade)."""
        found = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters"),
        )
        return [
            item
            for item in found.get("items", [])
            if any(
                o.get("kind") == "RayService" and o.get("name") == rayservice
                for o in item["metadata"].get("ownerReferences", [])
            )
        ]

    def delete_raycluster(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", name)

    def ensure_secret(self, namespace: str, name: str, key: str, make_value: Callable[[], str]) -> bool:
        """Create namespace and Secret when absent (True); an existing Secret is left alone (False)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        except ApiException as e:
            if e.status != 409:
                raise
        try:
            self.core.read_namespaced_secret(name, namespace)
            return False
        except ApiException as e:
            if e.status != 404:
                raise
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={key: make_value()})
        self.core.create_namespaced_secret(namespace, body)
        return True

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return self._dicts(self.core.list_namespaced_pod(namespace))

    def ingresses(self, namespace: str) -> list[dict[str, Any]]:
        return self._dicts(self.net.list_namespaced_ingress(namespace))

    def load_balancer_services(self) -> list[str]:
        services = self._dicts(self.core.list_service_for_all_namespaces())
        return [
            f"{s['metadata']['namespace']}/{s['metadata']['name']}"
            for s in services
            if s.get("spec", {}).get("type") == "LoadBalancer"
        ]

    def ebs_volumes(self) -> list[str]:
        volumes = self._dicts(self.core.list_persistent_volume())
        return [
            v["metadata"]["name"]
            for v in volumes
            if v.get("spec", {}).get("csi", {}).get("driver") == "ebs.csi.aws.com"
        ]


def is_ready(rayservice: dict[str, Any] | None) -> bool:
    conditions = (rayservice or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def ingress_address(ingresses: list[dict[str, Any]]) -> str | None:
    for ingress in ingresses:
        for lb in ingress.get("status", {}).get("loadBalancer", {}).get("ingress", []) or []:
            address = lb.get("hostname") or lb.get("ip")
            if address:
                return str(address)
    return None


def _pending_reason(pod: dict[str, Any]) -> str | None:
    for cond in pod.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            message = cond.get("message", "")
            if "nvidia.com/gpu" in message:
                return (
                    f"Pending: no node with a free GPU ({message}). On eks the GPU nodegroup may be at "
                    "0 or at max_size (eksctl scale nodegroup); on kind-gpu the device plugin may not "
                    "have registered the GPU (kubectl -n nvidia-device-plugin logs ds/...)."
                )
            return f"Pending: {message or 'not scheduled yet'}"
    return None


def _container_reason(pod: dict[str, Any]) -> str | None:
    statuses = pod.get("status", {})
    for status in (statuses.get("initContainerStatuses") or []) + (statuses.get("containerStatuses") or []):
        waiting = status.get("state", {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason in {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}:
            return f"cannot pull image {status.get('image')}: {waiting.get('message', reason)}"
        if reason == "CrashLoopBackOff":
            last = status.get("lastState", {}).get("terminated") or {}
            return (
                f"container {status.get('name')} keeps crashing (exit {last.get('exitCode')}, "
                f"{last.get('reason', '?')}); see kubectl logs --previous"
            )
    return None


def _serve_app_failures(rayservice: dict[str, Any] | None) -> list[str]:
    status = (rayservice or {}).get("status", {})
    found = []
    for key in ("activeServiceStatus", "pendingServiceStatus"):
        apps = (status.get(key) or {}).get("applicationStatuses") or {}
        for app, app_status in apps.items():
            if app_status.get("status") in {"DEPLOY_FAILED", "UNHEALTHY"}:
                found.append(f"Serve application {app} is {app_status['status']}: {app_status.get('message', '')}")
    return found


def diagnose(pods: list[dict[str, Any]], rayservice: dict[str, Any] | None) -> str:
    """What is stuck, one line per problem, from pod and RayService objects (dicts, camelCase keys)."""
    lines = []
    if rayservice is None:
        lines.append("the RayService does not exist (did the chart install?)")
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        if pod.get("status", {}).get("phase") == "Pending":
            reason = _pending_reason(pod)
            if reason:
                lines.append(f"pod {name}: {reason}")
        reason = _container_reason(pod)
        if reason:
            lines.append(f"pod {name}: {reason}")
    lines += _serve_app_failures(rayservice)
    if not lines:
        conditions = (rayservice or {}).get("status", {}).get("conditions", [])
        summary = "; ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason', '')})" for c in conditions)
        lines.append(f"no pod problem found; RayService conditions: {summary or 'none yet'}")
    return "\n".join(f"  - {line}" for line in lines)


def wait_rayservice_ready(kube: Kube, namespace: str, name: str, *, timeout_s: float) -> None:
    poll(
        f"RayService {namespace}/{name} to be Ready",
        lambda: True if is_ready(kube.rayservice(namespace, name)) else None,
        timeout_s=timeout_s,
        on_timeout=lambda: diagnose(kube.pods(namespace), kube.rayservice(namespace, name)),
    )


def wait_ingress_address(kube: Kube, namespace: str, *, timeout_s: float) -> str:
    return poll(
        f"an address on the Ingress in {namespace}",
        lambda: ingress_address(kube.ingresses(namespace)),
        timeout_s=timeout_s,
        on_timeout=lambda: (
            "  - the Ingress has no address yet. kind: is ingress-nginx running (kubectl -n ingress-nginx get pods)?"
            "\n    eks: the AWS Load Balancer Controller makes the ALB; its log says why it has not:"
            "\n    kubectl -n kube-system logs deploy/aws-load-balancer-controller"
        ),
    )


def wait_http_ok(url: str, *, timeout_s: float, interval_s: float = 3) -> None:
    """GET `url` until it answers 200: the ingress, the Service and a Serve replica all work."""

    last = ["no answer yet"]

    def check() -> bool | None:
        try:
            response = requests.get(url, timeout=10)
        except requests.RequestException as e:
            last[0] = type(e).__name__
            return None
        last[0] = f"HTTP {response.status_code}: {response.text[:200]}"
        return True if response.status_code == 200 else None

    poll(
        f"{url} to answer 200",
        check,
        timeout_s=timeout_s,
        interval_s=interval_s,
        on_timeout=lambda: f"  - last: {last[0]}",
    )
