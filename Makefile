# Two commands do all set-up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

.PHONY: setup demo test bench fuzz
setup: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	bash benchmarks/all.sh

fuzz: $(STAMP)
	CGTOOL_FUZZ_EXAMPLES=$${CGTOOL_FUZZ_EXAMPLES:-10000} CGTOOL_FUZZ_RANDOM=1 $(BIN)/python -m pytest -p no:cacheprovider tests/test_fuzz.py
