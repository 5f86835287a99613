#!/usr/bin/env bash
# Lint, format check, then the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin
$V/ruff check prunus tests benchmarks tools || exit 1
$V/ruff format --check prunus tests benchmarks tools || { echo "run 'make format' to fix formatting" >&2; exit 1; }
$V/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  # pytest's "no tests collected": a suite that ran nothing is broken, not green.
  echo "pytest collected no tests: the suite is empty or its paths are wrong" >&2
  exit 1
fi
exit "$rc"
