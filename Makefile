# The two commands: `make run` and `make test`. Each creates the environment
# itself (with uv, installed with pip when missing) on a machine that has only
# python3 and pip.

PYTHON ?= python3
# The interpreter the environment is built on: `make test UV_PYTHON=3.13` tries
# another, given as a version, a command or a path. scripts/find-python finds a
# version on PATH, among pyenv's versions (whose shims answer only for the
# selected one) or among uv's own interpreters.
UV_PYTHON ?= $(PYTHON)
override UV_PYTHON := $(shell scripts/find-python '$(UV_PYTHON)')
ifeq ($(UV_PYTHON),)
$(error no working Python interpreter found: see the line above)
endif
UV := $(PYTHON) -m uv
export UV_PYTHON
# Never download an interpreter: use the one given.
export UV_PYTHON_DOWNLOADS := never

SYNC_STAMP := .venv/.synced-$(subst /,_,$(UV_PYTHON))

.PHONY: run test lint typecheck unit bench bench-redis format clean uv

run: $(SYNC_STAMP)
	$(UV) run --frozen dispatchkit run

test: lint typecheck unit

lint: $(SYNC_STAMP)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: $(SYNC_STAMP)
	$(UV) run --frozen mypy

# The project's own source is compiled first: with PYTHONDONTWRITEBYTECODE set,
# every worker process the tests start would otherwise compile it again.
unit: $(SYNC_STAMP)
	$(UV) run --frozen python -m compileall -q src tests
	$(UV) run --frozen pytest

# Benchmarks are not tests: they take minutes and want a quiet machine.
bench: $(SYNC_STAMP)
	$(UV) run --frozen python benchmarks/seed.py

# Jobs/s through Redis (a server on 127.0.0.1:6379) beside in-process and Dramatiq.
bench-redis: $(SYNC_STAMP)
	$(UV) run --frozen python -m benchmarks.redis_bench

format: $(SYNC_STAMP)
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

# Inside a virtual environment pip refuses --user: uv goes into that environment.
uv:
	@$(UV) --version >/dev/null 2>&1 \
		|| if $(PYTHON) -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then \
			$(PYTHON) -m pip install --quiet uv; \
		else \
			$(PYTHON) -m pip install --user --quiet uv \
			|| $(PYTHON) -m pip install --user --quiet --break-system-packages uv; \
		fi

$(SYNC_STAMP): pyproject.toml uv.lock | uv
	@# A different interpreter needs a fresh environment.
	@if [ -d .venv ] && [ ! -f $(SYNC_STAMP) ]; then rm -rf .venv; fi
	@# Bytecode compiled once here (a few seconds): each process the tests and
	@# benchmarks start, workers among them, then loads it instead of compiling
	@# redis-py and the rest again, as it does every time when PYTHONDONTWRITEBYTECODE
	@# is set. The project's own source (editable) is compiled by `unit`.
	$(UV) sync --frozen --all-extras --compile-bytecode
	@touch $(SYNC_STAMP)

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache build dist
