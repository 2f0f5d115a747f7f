"""The JupyterHub add-on: z2jh chart values generated from a profile's `cluster.addons.jupyterhub`.

What a user gets (docs/jupyterhub.md): a single-user server with the dogbooth notebook (mounted
from a ConfigMap our chart renders), a persistent home volume, HF_TOKEN from a Secret, and on GPU
profiles `nvidia.com/gpu: 1` with the GPU toleration. Authentication is real: NativeAuthenticator
(sign-up, then admin approval) whose `admin` account has a generated password kept in a Secret, or
GitHub OAuth. The hub's proxy Service is an internal load balancer on eks unless the profile says
otherwise; on kind it is ClusterIP (use a port-forward).
"""

from __future__ import annotations

import logging
from typing import Any

from dogbooth.core.errors import ProfileError
from dogbooth.core.names import NAMESPACE as APP_NAMESPACE
from dogbooth.core.names import RELEASE_NAME
from dogbooth.core.paths import REPO_ROOT
from dogbooth.settings.cluster import JupyterHubSettings
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.render.jupyterhub")

CHART_VERSION = "4.4.0"  # matches ../shared/jupyterhub-schema, which the tests validate against
NAMESPACE = "jupyterhub"
ADMIN_USER = "admin"
ADMIN_SECRET = "dogbooth-jupyterhub-admin"  # made by the bring-up (admin_secret_step), never by the chart
ADMIN_SECRET_KEY = "password"
ADMIN_MOUNT = "/etc/dogbooth/admin"
NOTEBOOK_CONFIGMAP = "dogbooth-notebook"
NOTEBOOK_FILE = "dogbooth.ipynb"
GITHUB_SECRET = "jupyterhub-github-oauth"  # keys client-id, client-secret (docs/jupyterhub.md)

# Runs inside the hub (z2jh hub.extraConfig). The admin password is read from the mounted Secret at
# each login, so a rotated Secret works without a restart, and nobody can claim the admin name by
# signing up first.
_NATIVE_AUTH = f'''
import hmac, inspect, pathlib
from nativeauthenticator import NativeAuthenticator

_ADMIN = {ADMIN_USER!r}
_PASSWORD = pathlib.Path({ADMIN_MOUNT!r}) / {ADMIN_SECRET_KEY!r}


class DogboothAuthenticator(NativeAuthenticator):
    """NativeAuthenticator, plus an admin account whose generated password lives in a Secret."""

    async def authenticate(self, handler, data):
        if self.normalize_username(data.get("username") or "") == _ADMIN:
            expected = _PASSWORD.read_text().strip() if _PASSWORD.is_file() else ""
            given = (data.get("password") or "").encode()
            if expected and hmac.compare_digest(given, expected.encode()):
                return {{"name": _ADMIN, "admin": True}}
            return None
        result = super().authenticate(handler, data)
        return await result if inspect.isawaitable(result) else result

    def create_user(self, username, password, **kwargs):
        if self.normalize_username(username) == _ADMIN:
            return None  # the admin account comes from the Secret; it cannot be signed up for
        return super().create_user(username, password, **kwargs)


c.JupyterHub.authenticator_class = DogboothAuthenticator
'''


def settings(profile: Profile) -> JupyterHubSettings | None:
    hub = profile.cluster.addons.jupyterhub if profile.cluster else None
    return hub if hub is not None and hub.enabled else None


def _auth(hub: JupyterHubSettings) -> dict[str, Any]:
    """hub.* values for the chosen authenticator."""
    if hub.auth == "github":
        env = {
            "OAUTH_CLIENT_ID": {"valueFrom": {"secretKeyRef": {"name": GITHUB_SECRET, "key": "client-id"}}},
            "OAUTH_CLIENT_SECRET": {"valueFrom": {"secretKeyRef": {"name": GITHUB_SECRET, "key": "client-secret"}}},
            "OAUTH_CALLBACK_URL": {"valueFrom": {"secretKeyRef": {"name": GITHUB_SECRET, "key": "callback-url"}}},
        }
        config = {
            "JupyterHub": {"authenticator_class": "github"},
            "GitHubOAuthenticator": {"allowed_organizations": [hub.github_org], "scope": ["read:org"]},
        }
        return {"config": config, "extraEnv": env}
    native = {
        "open_signup": False,  # a sign-up waits for the admin's approval at /hub/authorize
        "minimum_password_length": 12,
        "check_common_password": True,
        "allowed_failed_logins": 5,  # then the account is locked for seconds_before_next_try
        "seconds_before_next_try": 600,
    }
    secret_volume = {
        "secretName": ADMIN_SECRET,
        "optional": True,
        "defaultMode": 0o440,
    }  # fsGroup: the hub (uid 1000) reads it
    return {
        # NativeAuthenticator only lets approved users in, so every user it authenticates is allowed.
        "config": {"NativeAuthenticator": native, "Authenticator": {"allow_all": True}},
        "extraConfig": {"dogbooth-auth": _NATIVE_AUTH},
        "extraVolumes": [{"name": "dogbooth-admin", "secret": secret_volume}],
        "extraVolumeMounts": [{"name": "dogbooth-admin", "mountPath": ADMIN_MOUNT, "readOnly": True}],
    }


def _proxy(profile: Profile, hub: JupyterHubSettings) -> dict[str, Any]:
    if profile.platform != "eks" or hub.load_balancer == "none":
        return {"service": {"type": "ClusterIP"}}  # kind: `kubectl port-forward svc/proxy-public 8081:80`
    annotations = {
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": hub.load_balancer,
    }
    return {"service": {"type": "LoadBalancer", "annotations": annotations}}


def _profiles(profile: Profile, hub: JupyterHubSettings) -> list[dict[str, Any]]:
    if hub.gpu:
        override = {
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "extra_resource_guarantees": {"nvidia.com/gpu": "1"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "cpu_guarantee": 2,
            "mem_guarantee": "12G",
            "mem_limit": "14G",
        }
        runtime_class = profile.chart.worker.runtime_class_name if profile.chart else None
        if runtime_class:  # kind-gpu: only pods under the nvidia RuntimeClass see the GPU
            override["extra_pod_config"] = {"runtimeClassName": runtime_class}
        return [
            {
                "display_name": "GPU: 1 NVIDIA GPU, 2+ CPU, 12 GB",
                "slug": "gpu",
                "default": True,
                "description": "Fine-tune and run Stable Diffusion on one GPU.",
                "kubespawner_override": override,
            }
        ]
    override = {"cpu_guarantee": 1, "cpu_limit": 2, "mem_guarantee": "2G", "mem_limit": "4G"}
    return [
        {
            "display_name": "CPU: 2 cores, 4 GB",
            "slug": "cpu",
            "default": True,
            "description": "The tiny model on the CPU: the notebook end to end in minutes.",
            "kubespawner_override": override,
        }
    ]


def _singleuser(profile: Profile, hub: JupyterHubSettings) -> dict[str, Any]:
    name, _, tag = hub.image.rpartition(":")
    namespace = profile.chart.namespace if profile.chart else APP_NAMESPACE
    optional_secret = {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}
    if profile.chart and profile.chart.hf_token:
        ref = profile.chart.hf_token
        optional_secret = {"secretKeyRef": {"name": ref.secret_name, "key": ref.secret_key, "optional": True}}
    env: dict[str, Any] = {
        "HF_TOKEN": {"valueFrom": optional_secret},
        # KubeRay's Serve Service of our RayService: what the notebook calls.
        "DOGBOOTH_ENDPOINT": f"http://{RELEASE_NAME}-serve-svc.{namespace}.svc:{profile.serve.http_port}",
        "DOGBOOTH_DEVICE": "cuda" if hub.gpu else "cpu",
    }
    if hub.pip_spec:
        env["DOGBOOTH_PIP_SPEC"] = hub.pip_spec
    notebook = {"name": "dogbooth-notebook", "configMap": {"name": NOTEBOOK_CONFIGMAP}}
    mount = {
        "name": "dogbooth-notebook",
        "mountPath": f"/home/jovyan/dogbooth/{NOTEBOOK_FILE}",
        "subPath": NOTEBOOK_FILE,
    }
    dynamic: dict[str, Any] = {"storageAccessModes": ["ReadWriteOnce"]}
    if hub.storage_class:
        dynamic["storageClass"] = hub.storage_class
    return {
        "image": {"name": name, "tag": tag},
        "profileList": _profiles(profile, hub),
        "extraEnv": env,
        "defaultUrl": f"/lab/tree/dogbooth/{NOTEBOOK_FILE}",
        "storage": {
            "type": "dynamic",
            "capacity": hub.storage_size,
            "dynamic": dynamic,
            "extraVolumes": [notebook],
            "extraVolumeMounts": [mount],
        },
        "cloudMetadata": {"blockWithIptables": True},  # pods must not borrow the node's IAM role
        "startTimeout": 900 if hub.gpu else 300,  # a GPU node may have to scale up from zero first
    }


def values(profile: Profile) -> dict[str, Any]:
    """z2jh values for `profile` (whose cluster.addons.jupyterhub must be enabled)."""
    hub = settings(profile)
    if hub is None:
        raise ProfileError(f"profile {profile.name}: cluster.addons.jupyterhub.enabled is false")
    placement = {"nodeSelector": {"dogbooth.io/pool": "system"}} if profile.platform == "eks" else {}
    return {
        "hub": {
            **_auth(hub),
            **placement,
            "db": {"type": "sqlite-pvc"},
        },  # users and approvals survive restarts
        "proxy": {**_proxy(profile, hub), "chp": placement} if placement else _proxy(profile, hub),
        "singleuser": _singleuser(profile, hub),
        "scheduling": {"userScheduler": {"enabled": False}},  # the default scheduler; our GPU nodes scale on demand
        "prePuller": {
            "hook": {"enabled": False},
            "continuous": {"enabled": False},
        },  # multi-GB images: pull on use
        "cull": {"enabled": True, "timeout": 3600},  # idle servers stop after an hour: GPUs are expensive
    }


def chart_values(profile: Profile) -> dict[str, Any]:
    """`jupyterhub:` values of our chart: the notebook ConfigMap in the hub's namespace."""

    hub = settings(profile)
    if hub is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "namespace": NAMESPACE,
        "notebookConfigMap": NOTEBOOK_CONFIGMAP,
        "notebook": (REPO_ROOT / "notebooks" / NOTEBOOK_FILE).read_text(),
    }
