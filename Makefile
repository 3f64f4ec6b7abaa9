# Two entry points, each sets up everything it needs first (system libraries for
# headless Qt, .venv, CPU torch, the package): see scripts/setup-env.sh.
VENV ?= .venv
OUT ?= demo-output

.PHONY: setup demo test lint
setup:
	@bash scripts/setup-env.sh

# The main job, headless: detect particles in a simulated vesicle time-lapse with the
# bundled model, then score the detections against the simulation's ground truth.
demo: setup
	$(VENV)/bin/napari-denodet simulate --scenario vesicle --snr 4 --density mid \
	  --frames 20 --size 256 --out $(OUT) --overwrite
	$(VENV)/bin/napari-denodet detect $(OUT)/noisy.tif --model fluorescence --out $(OUT) \
	  --overwrite
	$(VENV)/bin/napari-denodet evaluate $(OUT)/noisy_points.csv $(OUT)/truth.csv
	@echo "Results in $(OUT)/: noisy_points.csv (particles), noisy_denoised.tif; view with"
	@echo "  $(VENV)/bin/napari $(OUT)/noisy.tif $(OUT)/noisy_denoised.tif"

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts docs
