# Two entry points, each sets up everything it needs first (system libraries for
# headless Qt, .venv, CPU torch, the package): see scripts/setup-env.sh.
VENV ?= .venv
OUT ?= demo-output

.PHONY: setup demo test lint
setup:
	@bash scripts/setup-env.sh

demo: setup
	$(VENV)/bin/napari-denodet demo --out $(OUT)

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
