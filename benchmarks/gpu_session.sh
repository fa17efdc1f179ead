#!/usr/bin/env bash
# One prepared GPU check of the ExquisiteNetV2 case, for a short lease on a GPU machine:
#   1. the CUDA tests of the evaluator (tests/seeds/test_exquisitenet_cuda.py, about 1-2 min);
#   2. the full throughput benchmark (benchmarks/exquisitenet_throughput.py, about 4-6 min):
#      original recipe vs fast at 224/32 px, K packed processes, cold vs warm evaluation
#      through ge's executor, and evaluations per hour.
# Needs only python3 with torch and numpy (plus pytest for step 1). Writes its logs and the
# benchmark's JSON to $OUT (default ./gpu-session-out). Usage, from the repository root:
#   bash benchmarks/gpu_session.sh            # both steps
#   STEPS=bench bash benchmarks/gpu_session.sh  # the benchmark only
set -uo pipefail
OUT="${OUT:-gpu-session-out}"
STEPS="${STEPS:-tests bench}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" LITELLM_OFFLINE_MODE=true

{ date -u; nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } \
  2>&1 | tee "$OUT/machine.txt"

status=0
if [[ " $STEPS " == *" tests "* ]]; then
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/seeds/test_exquisitenet_cuda.py 2>&1 \
    | tee "$OUT/cuda-tests.log" || status=1
fi
if [[ " $STEPS " == *" bench "* ]]; then
  timeout 420 "$PY" benchmarks/exquisitenet_throughput.py --json "$OUT/throughput.json" 2>&1 \
    | tee "$OUT/throughput.log" || status=1
fi
exit "$status"
