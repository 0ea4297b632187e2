# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing, installs edgeq, builds the digits sample for Android
#   make test   creates .venv if missing, installs edgeq with the test extras, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgeq-installed

.PHONY: install demo demo-translator test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# tf-keras (needed by onnx2tf) declares a dependency on the `tensorflow` distribution; edgeq uses
# `tensorflow-cpu`, so tf-keras goes in without its dependencies.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'tf-keras==2.21.0'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/edgeq build sample_models/digits --target android --out dist/digits-android

demo-translator: install
	$(BIN)/edgeq build sample_models/translator --target android --out dist/translator-android
	$(BIN)/edgeq translate dist/translator-android "my mother wants 97 lamps" "the party is on 21 March at 7:45 pm"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check pipeline tests bench

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf dist build .pytest_cache
