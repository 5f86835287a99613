# The README's two commands. Both set up first (idempotent, fast the second time).
.PHONY: setup demo test lint format bench clean results

VENV := .venv
PY := $(VENV)/bin/python

setup:
	bash tools/setup.sh

demo: setup
	bash tools/demo.sh

# Lint + format check + the whole suite (see tools/test.sh for the exit-code handling).
test: setup
	bash tools/test.sh

lint: setup
	$(VENV)/bin/ruff check prunus tests benchmarks tools

format: setup
	$(VENV)/bin/ruff format prunus tests benchmarks tools
	$(VENV)/bin/ruff check --fix prunus tests benchmarks tools

clean:
	rm -rf $(VENV) .pytest_cache runs

# The README results block and docs/RESULTS.md, from benchmarks/results/ (repository tooling).
results: setup
	$(PY) benchmarks/render_results.py --readme README.md --markdown docs/RESULTS.md
