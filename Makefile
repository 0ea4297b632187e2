# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing, installs edgeq, sets up the arm64 emulator, builds the
#               digits sample for Android
#   make test   the same set-up with the test extras, then runs the tests
# The android target validates on emulated arm64 phone cores: qemu-user-static, gpgv and Debian's
# keyring must be installed (installed here when running as root with apt-get; otherwise the command
# to run is printed), and `edgeq emulator setup arm64` fetches the arm64 root once into
# ~/.cache/edgeq (network).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgeq-installed

.PHONY: install emulator demo demo-translator demo-detector test lint bench coverage zoo clean

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

# qemu-user runs the arm64 LiteRT; gpgv and Debian's keyring check the archive the root comes from.
EMULATOR_PACKAGES := qemu-user-static gpgv debian-archive-keyring

emulator: install
	@{ command -v qemu-aarch64-static || command -v qemu-aarch64; } >/dev/null && command -v gpgv >/dev/null \
	  && [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(EMULATOR_PACKAGES) >/dev/null; \
	  else \
	    echo "edgeq validates on emulated arm64 cores and needs them; install: sudo apt-get install $(EMULATOR_PACKAGES)" >&2; \
	    exit 2; \
	  fi; }
	$(BIN)/edgeq emulator setup arm64

demo: emulator
	$(BIN)/edgeq build sample_models/digits --target android --out dist/digits-android

demo-translator: emulator
	$(BIN)/edgeq build sample_models/translator --target android --out dist/translator-android
	$(BIN)/edgeq translate dist/translator-android "my mother wants 97 lamps" "the party is on 21 March at 7:45 pm"

demo-detector: emulator
	$(BIN)/edgeq build sample_models/detector --target android --out dist/detector-android

test: emulator
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# ruff (style, bugs, docstrings of public names), the CI templates against GitHub's and GitLab's schemas
# (check-jsonschema's bundled copies: no network), mypy (types), import-linter (the layers in
# pyproject.toml, no import cycles); tests/test_architecture.py keeps the line budget and the API, and
# tests/test_ci_templates.py runs shellcheck on every script of the templates.
lint: install
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows ci/github/edgeq.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.gitlab-ci ci/gitlab/.gitlab-ci.yml ci/gitlab/edgeq-build.yml
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: emulator
	$(BIN)/python bench/run.py
	$(BIN)/python bench/detector.py

coverage: install
	$(BIN)/python bench/model_coverage.py

# Every sample and every coverage model for every built-in target, through `edgeq matrix` as a CI job
# would run them; one table (zoo/ZOO.md). ZOO_ARGS="--only digits" builds some of them.
zoo: emulator
	$(BIN)/python bench/zoo.py $(ZOO_ARGS)

clean:
	rm -rf dist build .pytest_cache
