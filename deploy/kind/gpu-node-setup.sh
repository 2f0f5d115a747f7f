#!/usr/bin/env bash
# Runs inside the kind-gpu worker node (`docker exec -i <node> bash -s < this file`), after ctlptl
# created it with /dev/null mounted at /var/run/nvidia-container-devices/all. The steps are those of
# NVIDIA's nvkind (pkg/nvkind/node.go): install the container toolkit in the node, register the
# `nvidia` runtime with the node's containerd *next to* runc (not as the default: only pods with
# `runtimeClassName: nvidia` get GPUs injected), and stop the driver from recreating device nodes.
# Safe to run again: each step checks whether it is already done.
set -euo pipefail

if ! ls /dev/nvidia0 >/dev/null 2>&1; then
  echo "no /dev/nvidia0 in this node: on the host run" >&2
  echo "  sudo nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled" >&2
  echo "  sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place" >&2
  echo "  sudo systemctl restart docker" >&2
  echo "then delete and recreate the cluster (nox -s down / nox -s dev -- --profile kind-gpu)" >&2
  exit 3
fi

if ! command -v nvidia-ctk >/dev/null 2>&1; then
  apt-get update -q
  apt-get install -y -q gpg curl
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey \
    | gpg --dearmor --yes -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update -q
  apt-get install -y -q nvidia-container-toolkit
fi

# The merged config (drop-in files included), read once: `grep -q` in a pipe could end it early and,
# under pipefail, turn a match into a failure.
containerd_config=$(containerd config dump 2>/dev/null || true)

# A node set up by an older version of this script made nvidia containerd's default runtime, which
# hands the GPUs to every pod on the node. That cannot be undone in place reliably: recreate it.
if grep -Eq 'default_runtime_name = .nvidia.' <<<"$containerd_config"; then
  echo "containerd's default runtime on this node is nvidia (set up by an older dogbooth):" >&2
  echo "  delete and recreate the cluster (nox -s down / nox -s up -- --profile kind-gpu)" >&2
  exit 4
fi

if ! grep -q 'runtimes.nvidia' <<<"$containerd_config"; then
  # As nvkind does (its commit 9f70016): read the node's config file, not `containerd config dump`,
  # which does not tell nvidia-ctk the config version the file uses. No --set-as-default: runc stays
  # the default, and the `nvidia` RuntimeClass (applied next) selects this runtime per pod.
  nvidia-ctk runtime configure --runtime=containerd --config-source=file
  systemctl restart containerd
fi

# Toolkits before 1.19 leave ModifyDeviceFiles: 1, letting the driver recreate /dev/nvidia* nodes
# inside containers that were not given a GPU. Mask the parameter as nvkind does.
if grep -q '^ModifyDeviceFiles: 1$' /proc/driver/nvidia/params 2>/dev/null; then
  umount -R /proc/driver/nvidia || true
  cp /proc/driver/nvidia/params /root/gpu-params
  sed -i 's/^ModifyDeviceFiles: 1$/ModifyDeviceFiles: 0/' /root/gpu-params
  mount --bind /root/gpu-params /proc/driver/nvidia/params
fi

nvidia-smi -L
