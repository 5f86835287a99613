#!/usr/bin/env bash
# The main job, end to end on real Fashion-MNIST (a 10k-image subset so it fits a CPU budget):
# train ResNet-20, evaluate it, describe it. Later issues extend this to the full pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/prunus
OUT=${DEMO_OUT:-runs/demo}
rm -rf "$OUT"
$P train --model resnet20 --data fashion-mnist --subset 10000 --epochs 2 --out "$OUT"
$P eval "$OUT/model" --data fashion-mnist
$P info "$OUT/model"
