# The README's two commands are `make run` and `make test`. Each creates or
# reuses the project virtualenv (.venv) and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
SAMPLES := samples/invoices

.PHONY: run test test-emulator lint typecheck terraform-check bundle bench clean require-run require-test ocr chromium

# Say which tool is missing, in one line each, before anything else fails.
require-run:
	@PYTHON=$(PYTHON) bash scripts/require.sh run

require-test:
	@PYTHON=$(PYTHON) bash scripts/require.sh test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,gcp,audit]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

## Run the whole pipeline offline on the bundled sample invoices.
run: require-run $(STAMP)
	$(BIN)/sluice run $(SAMPLES) --preset invoice --format xlsx --format csv --out out
	$(BIN)/python samples/check_output.py out $(SAMPLES)/expected.json

## Lint, type-check, check architecture contracts, run every test.
test: require-test $(STAMP) ocr chromium lint typecheck terraform-check
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Each function's main.py is its own top-level module "main": check them one by one.
typecheck: $(STAMP)
	$(BIN)/mypy
	@for f in functions/*/main.py; do $(BIN)/mypy --no-error-summary $$f || exit 1; done

## Terraform: formatting and checkov (in its own virtualenv, .venv-checkov); parity tests run with pytest.
terraform-check:
	terraform fmt -check -recursive terraform
	bash scripts/checkov.sh

## Only the tests that run on Google's emulators (Pub/Sub, Firestore, fake GCS, Cloud Tasks).
test-emulator: $(STAMP)
	$(BIN)/pytest -q -m emulator

## Stage build/<function>/: main.py, common/, topology.yaml and pinned requirements.
bundle: $(STAMP)
	$(BIN)/python scripts/bundle.py

## The OCR engine for scanned documents (Tesseract, a Debian package; see scripts/install_ocr.sh).
ocr:
	bash scripts/install_ocr.sh

## The browser the console's tests drive (Debian's Chromium; see scripts/install_chromium.sh).
chromium:
	bash scripts/install_chromium.sh

bench: $(STAMP)
	$(BIN)/python bench/orchestration.py

clean:
	rm -rf $(VENV) .sluice out build .mypy_cache .pytest_cache .ruff_cache
