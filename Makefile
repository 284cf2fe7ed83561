# nopeek: `make run` (set-up + the main job) and `make test` (set-up + the whole test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast typecheck lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@start=$$(date +%s); \
	OMP_NUM_THREADS=1 $(BIN)/nopeek report --jobs 2 --out reports/latest && \
	echo "make run: finished in $$(( $$(date +%s) - start )) s -> reports/latest/report.md"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nopeek
	$(BIN)/python -m pytest tests
	bash scripts/wheel_smoke.sh $(VENV)
	site=$$(mktemp -d) && $(BIN)/mkdocs build --strict --quiet --site-dir $$site; \
	status=$$?; rm -rf $$site; exit $$status

# the fast tier (under 2 minutes on 2 cores): everything but the tests marked slow in tests/conftest.py
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy nopeek
	$(BIN)/python -m pytest tests -m "not slow"

# strict type check of the core package (settings: [tool.mypy] in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy nopeek

lint format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_dcor.py
	$(BIN)/python benchmarks/bench_report.py
	$(BIN)/python benchmarks/bench_parties.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_scale.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_distributed.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_transport.py

clean:
	rm -rf $(VENV) runs reports sweeps .pytest_cache .ruff_cache .mypy_cache *.egg-info
