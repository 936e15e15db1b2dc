# twa: `make test` (the CI command), `make reports` (the main job), `make lab`.
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build that lies on these machines' disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SHELL  := /bin/bash

.PHONY: install test export-check readme lab clean

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

test: export-check
	@n=$$(ls nbs/*.ipynb | wc -l); start=$$(date +%s); \
	if $(BIN)/nbdev_test --flags slow; then echo "nbdev_test: $$n passed, 0 failed ($$(( $$(date +%s) - start )) s)"; \
	else echo "nbdev_test: notebooks failed (see above)"; exit 1; fi

lab: install
	$(BIN)/jupyter lab nbs

clean:
	rm -rf _proc _docs .pytest_cache
