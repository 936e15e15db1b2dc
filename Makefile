# twa: `make test` (the CI command), `make reports` (the main job), `make train`, `make lab`.
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build that lies on these machines' disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
SHELL  := /bin/bash
# OpenMP reads this once, when PyTorch loads: waiting threads sleep instead of spinning, so a busy machine costs a run
# a fair share of its cores rather than most of its speed (bench/load.py; threads: twa.train.use_threads).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test export-check readme lab train reports study clean

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

PM := $(BIN)/papermill --no-progress-bar --log-output

## One run as a report notebook, progress in the terminal: make train ATTENTION=triple [SEED=1] [PRESET=smoke] [ARGS='-p steps 600']
## Run folder and report are named by twa.config.run_name, as twa-train names its run folder: runs/triple_cpu_s0 and
## reports/train_triple_cpu_s0.ipynb at the cpu preset, runs/triple_smoke_s0 and reports/train_triple_smoke_s0.ipynb at smoke;
## never a name of make reports (runs/<variant>_s<seed>).
## The notebook runs under a temporary name; a finished run's report never replaces an existing one (it becomes
## reports/train_<name>.2.ipynb, .3, ...), and a run that stops leaves its notebook in reports/failed/.
ATTENTION ?= triple
SEED      ?= 0
PRESET    ?= cpu
NAME       = $(shell $(BIN)/python -c "from twa.config import run_name; print(run_name('$(ATTENTION)', '$(PRESET)', $(SEED)))")
train: install
	@mkdir -p reports/failed; name=$(NAME); [ -n "$$name" ] || exit 1; tmp=reports/failed/.train_$$name.running.ipynb; \
	if $(PM) nbs/train.ipynb $$tmp -p attention $(ATTENTION) -p seed $(SEED) -p preset $(PRESET) -p progress log $(ARGS); then \
	  out=reports/train_$$name.ipynb; n=2; while [ -e $$out ]; do out=reports/train_$$name.$$n.ipynb; n=$$((n + 1)); done; \
	  mv $$tmp $$out; echo "report: $$out"; \
	else mv $$tmp reports/failed/train_$$name.ipynb 2>/dev/null; \
	  echo "the run stopped: its notebook is reports/failed/train_$$name.ipynb (no report was replaced)" >&2; exit 1; fi

## The main job: a learning-rate sweep per variant, every variant x seed through papermill at its chosen rate, the comparison,
## then HTML copies without code. An interrupted `make reports` continues where it stopped (finished runs are read back, not
## retrained); a finished run made by other code or settings is refused with a message, never overwritten.
VARIANTS ?= $(shell $(BIN)/python -c "from twa.variants import VARIANTS; print(' '.join(VARIANTS))" 2>/dev/null)
SEEDS    ?= 0 1 2
ONE_SEED ?= concat
LRS      ?= 5e-4 1e-3 2e-3
SWEEP    ?= 0.25
## Runs trained at once, one thread each: on 2 cores two 1-thread runs do about twice the work of one 2-thread run
## (a 2-thread step of `standard` takes 0.149 s with OMP_WAIT_POLICY=PASSIVE, a 1-thread step 0.134 s; bench/load.py).
JOBS     ?= $(shell nproc 2>/dev/null || echo 1)

## Every run folder make reports will reuse, checked against the settings and code it would run now (twa.train.check_reuse);
## after the sweep, the learning rates it chose are checked too.
CHECK_REUSE = $(BIN)/python -c "import json, os, sys; from twa.train import check_reuse; \
  chosen = json.load(open('runs/sweep/chosen.json')) if os.path.exists('runs/sweep/chosen.json') else None; \
  sys.exit(check_reuse('$(VARIANTS)'.split(), '$(SEEDS)'.split(), '$(ONE_SEED)'.split(), '$(PRESET)', [float(x) for x in '$(LRS)'.split()], $(SWEEP), 'runs', chosen))"
## HTML without code; a train report's progress lines (its cell tagged `progress`) stay in the notebook only.
HTML = $(BIN)/jupyter nbconvert --log-level=ERROR --to html --no-input --TagRemovePreprocessor.enabled=True \
  --TagRemovePreprocessor.remove_all_outputs_tags=progress

reports: install
	@mkdir -p reports runs; start=$$(date +%s); \
	$(CHECK_REUSE) || exit 1; \
	echo "sweep: $(VARIANTS) at lr $(LRS), $(SWEEP) of the $(PRESET) preset's steps, $(JOBS) at once"; \
	printf '%s\n' $(VARIANTS) | xargs -P $(JOBS) -I{} $(BIN)/twa-sweep --variants {} --lrs $(LRS) --preset $(PRESET) --fraction $(SWEEP) \
	  --out runs/sweep --set threads=1 || exit 1; \
	$(BIN)/twa-sweep --variants $(VARIANTS) --lrs $(LRS) --preset $(PRESET) --fraction $(SWEEP) --out runs/sweep --set threads=1 || exit 1; \
	cp runs/sweep/lr_sweep.csv reports/lr_sweep.csv; \
	$(CHECK_REUSE) || exit 1; \
	dirs=""; todo=""; for v in $(filter triple,$(VARIANTS)) $(filter-out triple,$(VARIANTS)); do \
	  lr=$$($(BIN)/python -c "import json; print(json.load(open('runs/sweep/chosen.json'))['$$v'])"); \
	  seeds="$(SEEDS)"; if [[ " $(ONE_SEED) " == *" $$v "* ]]; then seeds=$${seeds%% *}; fi; \
	  for s in $$seeds; do \
	    name=$$($(BIN)/python -c "from twa.config import report_run_name; print(report_run_name('$$v', $$s))"); \
	    dirs="$$dirs runs/$$name"; todo="$$todo$$v $$s $$lr $$name"$$'\n'; \
	  done; done; \
	printf '%s' "$$todo" | xargs -P $(JOBS) -L 1 bash -c 'echo "train runs/$$3 (lr $$2)"; \
	  $(PM) nbs/train.ipynb reports/train_$$3.ipynb -p attention $$0 -p seed $$1 -p preset $(PRESET) -p lr $$2 \
	    -p run_dir runs/$$3 -p resume True -p progress log -p threads 1' || exit 1; \
	$(PM) nbs/compare.ipynb reports/compare.ipynb -p runs_glob "$$dirs" -p preset $(PRESET) || exit 1; \
	$(HTML) reports/*.ipynb --output-dir reports/html || exit 1; \
	$(MAKE) --no-print-directory readme || exit 1; \
	echo "reports: done in $$(( $$(date +%s) - start )) s"

## The study (nbs/study.ipynb): triple vs standard along window, site, budget and data, each run trained by twa-train,
## JOBS at once; reuses make reports' runs and learning rates where they are there (run make reports first), trains
## what is missing, and reads back what finished. Add seeds with STUDY_SEEDS='0 1 2'.
STUDY_SEEDS ?= 0
study: install
	@mkdir -p reports; start=$$(date +%s); \
	$(PM) nbs/study.ipynb reports/study.ipynb -p preset $(PRESET) -p seeds "$(STUDY_SEEDS)" -p jobs $(JOBS) || exit 1; \
	$(HTML) reports/study.ipynb --output-dir reports/html || exit 1; \
	$(MAKE) --no-print-directory readme || exit 1; \
	echo "study: done in $$(( $$(date +%s) - start )) s"

## JupyterLab on the repository root (nbs/ and reports/), bound to localhost with its token; as root it needs --allow-root.
lab: install
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. --no-browser $(if $(filter 0,$(shell id -u)),--allow-root,)

clean:
	rm -rf _proc _docs .pytest_cache
