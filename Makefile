# twa: `make test` (the CI command), `make reports` (the main job), `make lab`.
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build that lies on these machines' disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SHELL  := /bin/bash

.PHONY: install test export-check readme lab reports clean

install: $(VENV)/.installed

$(VENV)/.installed: settings.ini setup.py
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## The package and README must be exactly what the notebooks export.
export-check: install
	@tmp=$$(mktemp -d) && cp -r twa README.md $$tmp/ && \
	$(BIN)/nbdev_export && $(MAKE) --no-print-directory readme >/dev/null && \
	if ! diff -r -x __pycache__ $$tmp/twa twa || ! diff $$tmp/README.md README.md; then \
	  echo "twa/ or README.md differ from what the notebooks export: run 'make readme' and 'nbdev_export', then commit"; rm -rf $$tmp; exit 1; fi; \
	rm -rf $$tmp; echo "export-check: twa/ and README.md match the notebooks"

## README.md from nbs/index.ipynb (nbdev_readme needs Quarto; nbconvert gives the same markdown).
readme: install
	@tmp=$$(mktemp -d) && $(BIN)/jupyter nbconvert --log-level=ERROR --to markdown nbs/index.ipynb --output-dir $$tmp --output README && \
	mv $$tmp/README.md README.md && rm -rf $$tmp

# Without a GPU, Triton kernels run in Triton's interpreter; it must be on before any notebook imports triton.
TEST_ENV := $(if $(shell command -v nvidia-smi 2>/dev/null),,TRITON_INTERPRET=1)

test: export-check
	@n=$$(ls nbs/*.ipynb | wc -l); start=$$(date +%s); \
	if $(TEST_ENV) $(BIN)/nbdev_test --flags slow; then echo "nbdev_test: $$n notebooks passed ($$(( $$(date +%s) - start )) s)"; \
	else echo "nbdev_test: notebooks failed (see above)"; exit 1; fi
	$(TEST_ENV) $(BIN)/python -m pytest -q tests

## The main job: every variant x seed through papermill, then the comparison, then HTML copies.
## A run whose eval.json says "finished" is skipped, so an interrupted `make reports` continues where it stopped.
VARIANTS ?= standard standard_pm triple concat rank1
SEEDS    ?= 0 1 2
PRESET   ?= cpu
STEPS    ?= 300
PM       := $(BIN)/papermill --log-level WARNING --no-progress-bar

reports: install
	@mkdir -p reports runs
	@start=$$(date +%s); \
	for v in $(VARIANTS); do for s in $(SEEDS); do \
	  run=runs/$${v}_s$$s; \
	  if $(BIN)/python -c "import json,sys; sys.exit(json.load(open('$$run/eval.json'))['status'] != 'finished')" 2>/dev/null; then \
	    echo "skip $$run (finished)"; continue; fi; \
	  echo "train $$run"; \
	  $(PM) nbs/train.ipynb reports/train_$${v}_s$$s.ipynb -p attention $$v -p seed $$s -p preset $(PRESET) -p steps $(STEPS) \
	    -p run_dir $$run -p resume True -p progress text || exit 1; \
	done; done; \
	$(PM) nbs/compare.ipynb reports/compare.ipynb -p runs_glob 'runs/*' || exit 1; \
	$(BIN)/jupyter nbconvert --log-level=ERROR --to html reports/*.ipynb --output-dir reports/html || exit 1; \
	echo "reports: done in $$(( $$(date +%s) - start )) s"

lab: install
	$(BIN)/jupyter lab nbs

clean:
	rm -rf _proc _docs .pytest_cache
