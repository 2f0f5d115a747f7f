#!/usr/bin/env bash
# Raw SD 1.5-sized throughput on this machine's GPU, for a short lease on a fresh box (docs/performance.md).
# Needs python with torch and diffusers (transformers optional); no Ray, no dogbooth install, no network.
#   scripts/gpu-bench.sh                         # sd15, 512 px, 25 steps, fp16; writes ./gpu-bench.json
#   scripts/gpu-bench.sh --compile --out x.json  # also torch.compile (adds minutes of compile time)
#   PYTHON=/path/to/python scripts/gpu-bench.sh  # another interpreter; every flag: --help
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import torch, diffusers' 2>/dev/null; then
    echo "gpu-bench: $python cannot import torch and diffusers: pip install torch diffusers" >&2
    exit 2
fi
# Nothing is downloaded: the model is built from configs, and the Hub must not be asked either.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec "$python" "$here/gpu_bench.py" "$@"
