# imcc: set-up, the built-in demo and the test suite. `make demo` and `make test` each set
# everything up first (a virtual environment in .venv with pinned dependencies).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
MODELS ?= .cache/models

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/fetch_test_models.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	bash scripts/fetch_test_models.sh $(MODELS)
	touch $@

demo: setup
	$(BIN)/imcc compile digits-cnn --target isaac --simulate digits-cnn --time-passes \
		--report out/digits_cnn.json -o out/digits_cnn.imcir
	$(BIN)/imcc run out/digits_cnn.imcir --input examples/digits_test.npz
	$(BIN)/imcc run digits-cnn --input examples/digits_test.npz --check-ort

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -n 2

bench: setup
	$(BIN)/python benchmarks/compile.py
	$(BIN)/python benchmarks/cost.py
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) out .pytest_cache
