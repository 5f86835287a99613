#!/usr/bin/env bash
# The main job, end to end on real Fashion-MNIST (a 5k-image subset sized for 2 CPU cores):
# recipes/quickstart.yaml trains ResNet-20, merges it with C-SGD, prunes it with MFP while
# fine-tuning, fine-tunes, exports to ONNX, benchmarks it and writes a report; it ends with one
# table (accuracy, MACs, params, bytes on disk, latency per stage). Rerun to resume a killed demo.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-runs/demo}
if [ "${DEMO_FRESH:-1}" = 1 ]; then rm -rf "$OUT"; fi
.venv/bin/prunus run recipes/quickstart.yaml --out "$OUT" "$@"
echo "report: $OUT/report.html (summary: $OUT/summary.md)"
