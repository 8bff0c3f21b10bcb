# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install prepare bqemulator demo dev test lint format bench stack-up stack-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	# --compile-bytecode: every process (the code location, each run worker, the CLI) loads
	# Dagster from .pyc instead of compiling ~450 modules; it matters where PYTHONDONTWRITEBYTECODE
	# is set, which stops Python from caching them itself (definitions load 4.9 s -> 2.9 s here).
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

# The pgoutput decoder's kernels are a C extension module the package build compiles
# (hatch_build.py); after editing the C, this rebuilds it as any install would.
KERNELS := analytics_assets/lib/_pgoutput_kernels$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
$(KERNELS): analytics_assets/lib/_pgoutput_kernels.c | $(STAMP)
	$(BIN)/python hatch_build.py

install: $(STAMP) $(KERNELS)

# The BigQuery API emulator the prod tests run against (tests/prod/emulator.py starts it): its
# own venv, since it pins a duckdb the project does not use; exact pins, --no-deps, the pinned
# patch applied. DuckDB cannot download extensions here, so the spatial extension the emulator
# INSTALLs at start is put, from its PyPI wheel, where INSTALL finds it already installed: the
# DuckDB home (~/.duckdb) of the server process, which the test setup points at $(BQEMU)/home.
BQEMU       := .venv-bqemulator
BQEMU_STAMP := $(BQEMU)/.installed-stamp
BQEMU_PINS  := tests/bqemulator/requirements.txt
BQEMU_PATCH := tests/bqemulator/bqemulator-1.4.0-script-parameters.patch
$(BQEMU_STAMP): $(BQEMU_PINS) $(BQEMU_PATCH) | $(STAMP)
	rm -rf $(BQEMU) && $(PYTHON) -m venv --without-pip $(BQEMU)
	$(BIN)/uv pip install -q --no-deps --python $(BQEMU)/bin/python -r $(BQEMU_PINS)
	site=$$($(BQEMU)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  patch -s -p1 -d "$$site" < $(BQEMU_PATCH) && \
	  ext=$$($(BQEMU)/bin/python -c 'import duckdb; print(duckdb.__version__, duckdb.sql("pragma platform").fetchone()[0])') && \
	  set -- $$ext && mkdir -p $(BQEMU)/home/.duckdb/extensions/v$$1/$$2 && \
	  cp "$$site/duckdb_extension_spatial/extensions/v$$1/spatial.duckdb_extension" \
	    $(BQEMU)/home/.duckdb/extensions/v$$1/$$2/
	touch $(BQEMU_STAMP)

bqemulator: $(BQEMU_STAMP)

# Parse the dbt project once so definitions load from a ready manifest. With the zone var the
# Dagster assets pass (lib/partitions.py dbt_zone_vars), so their runs parse only what changed.
prepare: install
	$(BIN)/python -m compileall -q analytics_assets
	cd dbt && ../$(BIN)/dbt parse --quiet --target dev --target-path target/dev \
	  --vars "{partition_timezone: $${PARTITION_TIMEZONE:-UTC}}"

demo: prepare
	$(BIN)/analytics-assets demo

# Started in DAGSTER_HOME: `dagster dev` warns that a dagster.yaml in any other folder it starts
# in "will not be used", this project's too, which DAGSTER_HOME's dagster.yaml links to.
dev: prepare
	$(BIN)/analytics-assets stack up
	eval "$$($(BIN)/analytics-assets stack env)" && cd "$$DAGSTER_HOME" && \
	  $(CURDIR)/$(BIN)/dagster dev -w $(CURDIR)/workspace.yaml -h 127.0.0.1 -p $${DAGSTER_PORT:-3000}

test: prepare bqemulator
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: prepare
	$(BIN)/python bench/run_all.py

stack-up: install
	$(BIN)/analytics-assets stack up

stack-down: install
	$(BIN)/analytics-assets stack down

clean: stack-down
	rm -rf .data dbt/target dbt/logs
