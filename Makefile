# Two entry points, each sets up everything it needs first (system libraries for
# headless Qt, .venv, CPU torch, the package): see scripts/setup-env.sh.
VENV ?= .venv
OUT ?= demo-output

.PHONY: setup demo test lint
setup:
	@bash scripts/setup-env.sh

# The main job, headless: a simulated vesicle time-lapse with its ground truth.
demo: setup
	$(VENV)/bin/napari-denodet simulate --scenario vesicle --snr 4 --density mid \
	  --frames 20 --out $(OUT) --overwrite
	@echo "Open the results in napari: $(VENV)/bin/napari $(OUT)/noisy.tif $(OUT)/truth.csv"

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
