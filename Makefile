# orthofed: every target that needs Python depends on `setup`, so each works on a fresh clone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test bench reproduce lint format clean

setup: $(STAMP)

# Re-install only when the project's dependency declaration changes (a no-op otherwise).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: pip takes the CPU wheel from this machine's disk.
	$(BIN)/pip install --quiet --no-compile "torch==2.13.0"
	$(BIN)/pip install --quiet --no-compile -e ".[test]"
	# Byte-compile once, on every core (pip compiles one file at a time; a fresh setup took
	# 57 s that way, 46 s this way, on 2 cores); files that are not Python 3.11 (torch ships a
	# 3.12-only one) are skipped, as pip skips them.
	$(BIN)/python -c "import compileall, sys; compileall.compile_dir(sys.argv[1], quiet=2, workers=0)" $(VENV)/lib
	@touch $(STAMP)

demo: setup
	$(BIN)/python -m core.demo

# Two workers, one file each at a time (module fixtures such as a Flower simulation or a
# loopback deployment stay in one worker), one torch thread each: much of the suite waits on
# Flower/Ray processes, so two files at once finish sooner than one file with two threads.
# Three workers were tried on the 2-core machine (2026-12-06): 419 s, 504 s and 593 s (fresh
# clone) against 552 s for two workers between the last two, so no gain that the machine's
# run-to-run spread does not swamp, and more load on the timeout-bound Flower tests.
# Files are handed out longest first (tests/conftest.py), not by xdist's count of tests.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Benchmarks print ratios measured in one run (the paper step alone takes minutes on 2 cores);
# each also writes its figures as JSON under runs/bench/.
bench: setup
	$(BIN)/python bench/train_step.py --json runs/bench/train_step.json
	$(BIN)/python bench/dp_step.py --json runs/bench/dp_step.json
	$(BIN)/python bench/dp_finetune_step.py --json runs/bench/dp_finetune_step.json
	$(BIN)/python bench/server_memory.py --sites 30 --preset paper --json runs/bench/server_memory.json
	$(BIN)/python bench/federation_overhead.py --engine simulation --json runs/bench/federation_overhead_simulation.json
	$(BIN)/python bench/federation_overhead.py --engine deployment --launcher both --json runs/bench/federation_overhead_deployment.json
	$(BIN)/python bench/parallel_sites.py --json runs/bench/parallel_sites.json
	$(BIN)/python bench/gpu_step.py --optional --json runs/bench/gpu_step.json

# The paper's claims on synthetic sites (2.2 h on 2 cores on 2026-12-07 with 60-case knee sites;
# 3 h 52 min with today's 150: seeds 0-1 side by side 2 h 21 min, seed 2 alone 1 h 26 min;
# seeds as parallel processes (README); resumable; --quick: minutes).
reproduce: setup
	$(BIN)/python -m reproduce --jobs auto

# Lint and format over all code (the same check .ci/run does before the tests).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs demo-sites .pytest_cache
