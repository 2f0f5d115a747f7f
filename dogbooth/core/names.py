"""Names and numbers that more than one layer (and the Tiltfile, through the CLI) must agree on.

Each is defined here once. The replica's own names (the deployment name, its argument models) live
in services/schemas.py instead, because the replica imports nothing of dogbooth.
"""

from __future__ import annotations

NAMESPACE = "dogbooth"  # the Kubernetes namespace of our chart, and the chart's release name
RELEASE_NAME = "dogbooth"
KUBERAY_NAMESPACE = "kuberay-system"  # where kuberay-operator runs; it alone may reach the dashboard
SERVE_PORT = 8000  # Ray Serve's HTTP proxy
DASHBOARD_PORT = 8265  # Ray's dashboard and its Serve REST API (it can run code: never exposed)
# Ray's Prometheus metrics export on the local head: not 8080 (KubeRay's metrics port, and many dev servers')
LOCAL_METRICS_PORT = 8090
METRICS_PATH = "/metrics"  # where Ray's metrics agent serves the Prometheus text format
MODEL_NAME = "dogbooth-model"  # the default name of a fine-tune's export
GPU_NODE_LABEL = "nvidia.com/gpu.present"  # on GPU nodes: the kind-gpu worker, the eks GPU nodegroup
# An RFC 1123 DNS label (Kubernetes names): lower-case letters, digits and '-', alphanumeric at both ends.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
