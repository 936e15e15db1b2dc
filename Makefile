# twa: `make test` (the CI command), `make reports` (the main job), `make train`, `make lab`.
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build that lies on these machines' disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SHELL  := /bin/bash
# How OpenMP's threads wait is chosen by twa.threads when a run starts (a short spin alone, passive next to busy
# processes; bench/load.py); set OMP_WAIT_POLICY or GOMP_SPINCOUNT yourself to override it.

.PHONY: install test export-check readme lab train compare reports study clean docs

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

## README.md from nbs/index.ipynb (nbdev_readme needs Quarto; nbconvert gives the same markdown), with "What we found" from
## reports/findings.md (written by compare.ipynb in make reports) in place of the line <!-- reports/findings.md -->, and
## the study's sentences from reports/study.md (written by study.ipynb in make study) in place of <!-- reports/study.md -->.
readme: install
	@tmp=$$(mktemp -d) && $(BIN)/jupyter nbconvert --log-level=ERROR --to markdown nbs/index.ipynb --output-dir $$tmp --output README && \
	$(BIN)/python -c "import sys; from pathlib import Path; r, f = Path(sys.argv[1]), Path('reports/findings.md'); \
	  found = f.read_text().strip() if f.exists() else '## What we found\n\nNothing yet: \x60make reports\x60 writes it.'; \
	  study = Path('reports/study.md').read_text().strip() if Path('reports/study.md').exists() else '### Where it could flip\n\nNot run yet: \x60make study\x60 writes it.'; \
	  r.write_text(r.read_text().replace('<!-- reports/findings.md -->', found).replace('<!-- reports/study.md -->', study))" $$tmp/README.md && \
	mv $$tmp/README.md README.md && rm -rf $$tmp

# Without a GPU, Triton kernels run in Triton's interpreter; it must be on before any notebook imports triton.
TEST_ENV := $(if $(shell command -v nvidia-smi 2>/dev/null),,TRITON_INTERPRET=1)

test: export-check
	@n=$$(ls nbs/*.ipynb | wc -l); start=$$(date +%s); \
	if $(TEST_ENV) $(BIN)/nbdev_test --flags slow; then echo "nbdev_test: $$n notebooks passed ($$(( $$(date +%s) - start )) s)"; \
	else echo "nbdev_test: notebooks failed (see above)"; exit 1; fi
	$(TEST_ENV) $(BIN)/python -m pytest -q -n 2 --dist loadfile tests   # the two files side by side, each one's tests in order

## Report notebooks run through twa-report (papermill's API): progress in the terminal, a failing cell in one line
## (ValueError: ... with the valid names) instead of papermill's traceback, and the resume hint after Ctrl-C.
PM := $(BIN)/twa-report
## HTML without code; a train report's progress lines (its cell tagged `progress`) stay in the notebook only.
HTML = $(BIN)/jupyter nbconvert --log-level=ERROR --to html --no-input --TagRemovePreprocessor.enabled=True \
  --TagRemovePreprocessor.remove_all_outputs_tags=progress
## `free base` prints the first of base.ipynb, base.2.ipynb, base.3.ipynb, ... that does not exist: nothing is overwritten.
FREE = free() { out=$$1.ipynb; n=2; while [ -e $$out ]; do out=$$1.$$n.ipynb; n=$$((n + 1)); done; echo $$out; }

## One run as a report notebook and its HTML, progress in the terminal:
##   make train ATTENTION=triple [SEED=1] [PRESET=smoke] [DATASET=videos ARGS='-p data_dir clips/'] [IMPORTS=my_attention.py] [ARGS='-p steps 600']
## Run folder and report are named by twa.config.run_name, as twa-train names its run folder: runs/triple_cpu_s0 and
## reports/train_triple_cpu_s0.ipynb (+ .html) at the cpu preset, runs/triple_smoke_s0 at smoke, runs/triple_cpu_videos_s0 on
## videos; never a name of make reports or make study (runs/main/, runs/sweep/, runs/confirm/, runs/study/).
## IMPORTS names your own files or modules (space-separated), imported first: their variants and datasets can be trained.
## The notebook runs under a temporary name; a finished run's report never replaces an existing one (it becomes
## reports/train_<name>.2.ipynb, .3, ...), and a run that stops leaves its notebook in reports/failed/, under a free name too.
ATTENTION ?= triple
SEED      ?= 0
PRESET    ?= cpu
DATASET   ?= shapes
IMPORTS   ?=
NAME       = $(shell $(BIN)/python -c "from twa.config import run_name; print(run_name('$(ATTENTION)', '$(PRESET)', $(SEED), '$(DATASET)'))")
train: install
	@mkdir -p reports/failed; name=$(NAME); [ -n "$$name" ] || exit 1; tmp=reports/failed/.train_$$name.running.ipynb; $(FREE); \
	if $(PM) nbs/train.ipynb $$tmp -p attention $(ATTENTION) -p seed $(SEED) -p preset $(PRESET) -p dataset $(DATASET) -p progress log \
	     $(if $(IMPORTS),-p imports '$(IMPORTS)',) $(ARGS) --moved --on-interrupt "continue it with the same make train and ARGS='-p resume True' added"; then \
	  out=$$(free reports/train_$$name); mv $$tmp $$out; $(HTML) $$out --output-dir reports && echo "report: $$out and $${out%.ipynb}.html"; \
	else out=$$(free reports/failed/train_$$name); mv $$tmp $$out 2>/dev/null; \
	  echo "the run stopped: its notebook, with the whole traceback, is $$out (no report was replaced)" >&2; exit 1; fi

## Your own comparison, into a folder of your choosing (never reports/ unless you name it): every finished run RUNS matches
## (globs, space-separated), each variant against REFERENCE (default: twa.variants.VARIANTS.reference), as OUT/compare.ipynb and .html, OUT/summary.csv, OUT/findings.md.
##   make compare RUNS='runs/*_cpu_s0' OUT=mine
RUNS      ?= runs/*_$(PRESET)_s*
REFERENCE ?=
compare: install
	@[ -n "$(OUT)" ] || { echo "make compare needs OUT=<folder> for its notebook, HTML, summary and findings (reports/ is make reports')" >&2; exit 2; }; \
	mkdir -p $(OUT) && $(PM) nbs/compare.ipynb $(OUT)/compare.ipynb -p runs_glob "$(RUNS)" $(if $(REFERENCE),-p reference $(REFERENCE),) -p summary_csv $(OUT)/summary.csv \
	  -p findings_md $(OUT)/findings.md -p made_by "make compare RUNS='$(RUNS)'" && \
	$(HTML) $(OUT)/compare.ipynb --output-dir $(OUT) && echo "comparison: $(OUT)/compare.html, $(OUT)/summary.csv, $(OUT)/findings.md"

## The main job, one call into the runner (twa-run, nbs/15_experiments.ipynb): the learning-rate sweep (extended by factors of
## 2 until every variant's pick is interior), full-length runs at half and twice the picks of standard and triple, every
## variant x seed at its rate (standard and triple on SEEDS seeds, more if their measured spread asks for a +-0.5 dB
## interval), then the train reports of the first seeds, the comparison and their HTML copies without code. Runs train in
## runs/ (JOBS at once, one thread each, the most expensive first); what the reports read of each is kept in reports/runs/
## for git. Only a change on the training path retrains: an interrupted or repeated `make reports` reads back what
## finished, and a folder made by other settings or training-path code is refused, with the command that frees it.
## `make reports ARGS=--commands` prints the runs it would train as one twa-train command per line (for a scheduler).
SEEDS ?= 10
## Runs trained at once, one thread each: on 2 cores two 1-thread runs do about twice the work of one 2-thread run
## (a 2-thread step of `standard` takes 0.149 s with OMP_WAIT_POLICY=PASSIVE, a 1-thread step 0.134 s; bench/load.py).
JOBS  ?= $(shell nproc 2>/dev/null || echo 1)
RUN    = $(BIN)/twa-run --preset $(PRESET) --seeds $(SEEDS) --jobs $(JOBS) $(if $(VARIANTS),--variants $(VARIANTS),) $(if $(IMPORTS),--imports '$(IMPORTS)',) $(ARGS)

reports: install
	@mkdir -p reports; $(RUN) reports && $(MAKE) --no-print-directory readme

## The study (nbs/study.ipynb), one call into the runner: triple vs standard along window, site, budget and data, every
## level on one seed, then the levels whose one-seed gap exceeds the base point's seed spread on 5 paired seeds;
## reports/study.csv (one row per run), the notebook and its HTML. Its base point is make reports' runs (run it first).
study: install
	@mkdir -p reports; $(RUN) study && $(MAKE) --no-print-directory readme

## JupyterLab on the repository root (nbs/ and reports/), bound to localhost with its token; as root it needs --allow-root.
lab: install
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,)

clean:
	rm -rf _proc _docs _site .pytest_cache

## The docs site in _site/ (open _site/index.html; it needs no network): the README, every notebook of nbs/ as stored (not
## run), and an API page per module from its docstrings. mkdocs.yml; docs/build.py writes the page sources into _docs/.
docs: install $(VENV)/.docs-installed
	@mkdir -p _docs; start=$$(date +%s); \
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict && echo "docs: _site/index.html ($$(( $$(date +%s) - start )) s)"

$(VENV)/.docs-installed: $(VENV)/.installed settings.ini setup.py
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $@
