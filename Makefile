# Everything a fresh clone needs: a virtualenv with the package and its dev extras, and Azurite from npm.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The Azure CLI, in an environment of its own, that tests/test_docs_az_commands.py checks the docs' az lines with.
AZCLI_VENV := .venv-azcli
DEMO_ROOT := .azbatch-local/demo
# Example prices (per core-hour and node-hour, dedicated,low-priority) so the demo's run report has a cost estimate.
DEMO_PRICES := --azbatch-price-core-hour 0.048,0.0096 --azbatch-price-node-hour 0.192,0.0384

.PHONY: all install azcli demo test bench bench-quick clean

all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the project's dependency declarations change.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	# compat mode: Snakemake finds plugins with pkgutil.iter_modules, which cannot see the default editable finder.
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

# azure-cli pins azure-core and azure-batch versions of its own, so it cannot share .venv. Without byte-compiling,
# its install takes about a minute.
$(AZCLI_VENV)/.installed: tests/azure-cli-requirements.txt
	$(PYTHON) -m venv $(AZCLI_VENV)
	$(AZCLI_VENV)/bin/python -m pip install --quiet --no-compile -r tests/azure-cli-requirements.txt
	touch $@

azcli: $(AZCLI_VENV)/.installed

# Start Azurite and the local Batch service, run example_workflow/ through the azbatch executor, stop everything.
demo: install
	rm -rf $(DEMO_ROOT)
	cd example_workflow && PATH="$(CURDIR)/$(BIN):$$PATH" ../$(BIN)/azbatch-local run --root ../$(DEMO_ROOT) -- \
		../$(BIN)/python run_demo.py $(DEMO_PRICES)

# TEST_WORKERS=0 runs the suite in one process. Each worker takes whole test files (their module fixtures stay
# shared) and starts its own session service.
TEST_WORKERS ?= 4
# The three installs are independent (the Azure CLI has its own environment): side by side they take as long as
# the longest, not the sum.
test:
	$(MAKE) --no-print-directory -j3 install azcli
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

# The benchmark table (and .azbatch-local/bench/results.json): make bench [SECTIONS="scale chaos"]
# [BENCH_ARGS=--full]; make bench-quick: every section at small sizes, a few minutes.
BENCH_ARGS ?=
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run.py $(if $(SECTIONS),--sections $(SECTIONS)) $(BENCH_ARGS)

bench-quick: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run.py --quick $(if $(SECTIONS),--sections $(SECTIONS)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(AZCLI_VENV) node_modules .azbatch-local .pytest_cache
