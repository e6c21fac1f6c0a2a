# Every target bootstraps .venv on first use; all are safe to rerun.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: install run test test-slow test-slurm lint format figures status bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py $(ARGS)

# The tests run in a random order (pytest-randomly), so that none can lean on another; the order's
# seed is printed first, and `make test SEED=<n>` runs that order again.
# `:=` draws it once: a recursive `?=` would run the shell again for every use, and the order
# printed would not be the order run.
# On every core (pytest-xdist, WORKERS=auto): each worker takes whole test files (--dist loadfile),
# so a module's fixtures are made once, and runs torch on one thread (OMP_NUM_THREADS=1: two
# workers' OpenMP threads on shared cores wait on each other). Every worker shuffles with the same
# seed: the order of the files handed out and of the tests in each file is the seed's, but which
# worker takes a file depends on timing; `make test SEED=<n> WORKERS=0` replays the whole order in
# one process.
ifndef SEED
SEED := $(shell $(PY) -c 'import random; print(random.randrange(10**6))')
endif
WORKERS ?= auto
PARALLEL = $(if $(filter 0,$(WORKERS)),-p no:xdist,-n $(WORKERS) --dist loadfile)
test: $(STAMP)
	@echo "test order: make test SEED=$(SEED)"
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p randomly \
		--randomly-seed=$(SEED) $(PARALLEL)

test-slow: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m slow

# Sweeps on a real SLURM scheduler: starts a single-node cluster unless one answers (as root;
# installs the Debian packages when missing), runs the `slurm` tests, stops what it started.
test-slurm: $(STAMP)
	@record=$$(mktemp); scripts/slurm/up.sh $$record || { rm -f $$record; exit 1; }; \
		WANDB_MODE=disabled $(BIN)/python -m pytest -q -m slurm tests/launch/test_launch_slurm.py; \
		rc=$$?; scripts/slurm/down.sh $$record; rm -f $$record; exit $$rc

# Every figure and table from the runs in results/runs (no training), built aside and swapped in
# only when every step succeeded. REFERENCE=<csv> overlays published curves, e.g.
# REFERENCE=../shared/reference/adabelief_cifar10_curves.csv
REFERENCE ?=
figures: $(STAMP)
	$(BIN)/python scripts/build_figures.py $(if $(REFERENCE),--reference $(REFERENCE))

# Where each run of a sweep stands: make status EXPERIMENT=<name> [ARGS="seed=0,1"]
status: $(STAMP)
	$(BIN)/python scripts/sweep_status.py $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) $(ARGS)

# optimizer-step cost of every optimizer config vs Adam, then epoch throughput; tables land in
# results/benchmarks/ (ARGS go to the step benchmark, e.g. ARGS="--device cuda --batch-size 128")
bench: $(STAMP)
	$(BIN)/python scripts/bench_optimizers.py $(ARGS)
	$(BIN)/python scripts/bench_epoch.py --batch-size 32 --images 512

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
