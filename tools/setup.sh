#!/usr/bin/env bash
# Idempotent set-up: .venv, torch (pinned, first), prunus with dev extras (OpenVINO included), timm (no deps),
# Fashion-MNIST.
# Fast the second time: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.prunus-setup-stamp
# Re-install only when the inputs of the install changed.
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VPY" -m pip install --quiet --upgrade pip
  # torch first, from the constraints file, so nothing later can pull another build.
  "$VPY" -m pip install --quiet -c constraints.txt torch
  "$VPY" -m pip install --quiet -c constraints.txt -e ".[dev,export,report,openvino]"
  # timm without its dependencies: torchvision's wheels here link CUDA and would not load against the
  # CPU torch (the tests put a stand-in on the path); yaml, safetensors and pillow are already there
  "$VPY" -m pip install --quiet --no-deps -c constraints.txt timm
  echo "$want" > "$stamp"
fi
# The default dataset, from the Debian package, when apt is usable as root.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
    || echo "setup: could not install dataset-fashion-mnist; tests needing it will be skipped" >&2
fi
# Headless Chromium renders the HTML report in the report test (the test skips without it).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    || echo "setup: could not install chromium; the report browser test will be skipped" >&2
fi
