#!/usr/bin/env bash
# The checks for whoever has a GPU: nothing in this repository has run on one (README). Run from the
# repository root of a checkout with requirements.txt installed, on a machine where torch sees CUDA:
#
#   bash scripts/gpu_check.sh                      # cuda; writes results/gpu_check.json, results/gpu_benchmark_train.json
#   DEVICE=cuda:1 SKIP_TRAIN=1 bash scripts/gpu_check.sh
#   ARMER_COMMIT=<sha> bash scripts/gpu_check.sh   # in a copy of the tree without .git
#
# 1. scripts/gpu_check.py: the extractors CLI on examples/ (Whisper-base via CTranslate2, MiniLM, the FER
#    CNN), the Hugging Face recipes in float16 autocast (tiny random models; real ones from $ARMER_WEIGHTS
#    when there), armer.predict, armer.evaluate and a checkpoint round trip, each with --device cpu and
#    --device $DEVICE: timings and how close the outputs are -> results/gpu_check.json (with the commit).
# 2. scripts/benchmark_train.py --device $DEVICE, the training benchmark (MER2023-sized synthetic data, 100 epochs, 5 folds)
#    -> results/gpu_benchmark_train.json (with the commit); BENCH_TRAIN_ARGS adds flags (e.g. "--epochs 20").
# Exit status: 1 if a check failed (the JSON says which), 2 if torch sees no CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results}
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device here (torch.cuda.is_available() is False); run this on a GPU machine" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

status=0
python scripts/gpu_check.py --device "$DEVICE" --out "$OUT/gpu_check.json" || status=1
if [[ "${SKIP_TRAIN:-0}" != "1" ]]; then
  # shellcheck disable=SC2086  (BENCH_TRAIN_ARGS is a list of flags)
  python scripts/benchmark_train.py --device "$DEVICE" --out "$OUT/gpu_benchmark_train.json" ${BENCH_TRAIN_ARGS:-} || status=1
fi
if [[ -n "${ARMER_COMMIT:-}" && -f "$OUT/gpu_benchmark_train.json" ]]; then  # no .git: benchmark_train wrote "unknown"
  python - "$OUT/gpu_benchmark_train.json" <<'EOF'
import json, os, sys
data = json.load(open(sys.argv[1]))
if data.get("commit", "unknown").startswith("unknown"):
    data["commit"] = os.environ["ARMER_COMMIT"]
    open(sys.argv[1], "w").write(json.dumps(data, indent=1) + "\n")
EOF
fi
echo "results: $OUT/gpu_check.json, $OUT/gpu_benchmark_train.json (unless SKIP_TRAIN=1)"
exit $status
