#!/usr/bin/env bash
# docs/report.png: the report of a small real pipeline run, rendered by headless Chromium.
# recipes/quickstart.yaml shrunk with --set (Fashion-MNIST subset, ResNet-20 at half width, 1-2 epochs
# per stage, a short compress), and a baseline arm to compare with (34 min on 2 cores
# at a load average of ~8; less on a quiet machine).
#   bash tools/report_screenshot.sh            (OUT=runs/report-demo PY=.venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/report-demo}
"$PY" -m prunus run recipes/quickstart.yaml --out "$OUT" --no-progress \
  --set 'arms={baseline: {stages: [baseline, report]}, quickstart: {}}' \
  --set data.subset=1500 --set data.val_size=300 --set data.test_subset=1000 --set model.width_mult=0.5 \
  --set baseline.train.epochs=2 --set csgd-merge.train.epochs=1 --set mfp-prune.train.epochs=2 \
  --set finetune.train.epochs=1 \
  --set 'mfp-prune.methods=[{name: mfp, args: {rate: 0.3, switch_interval: 1, holdout_size: 200}}]' \
  --set compress.compress.finetune_steps=30 --set compress.compress.rescore_size=200 \
  --set compress.compress.calib_size=64 --set bench.repeats=5
"$PY" -m prunus report "$OUT" >/dev/null  # a finished run's report stage is not rerun: render with this code
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1400,2000 --screenshot="$PWD/docs/report.png" "file://$(realpath "$OUT")/report.html" 2>/dev/null
echo "docs/report.png from $OUT/report.html"
