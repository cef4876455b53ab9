# Two commands a new user needs: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Install, create the SQLite schema and run every role on loopback (delivery to var/sink).
run: $(STAMP)
	$(BIN)/relay migrate
	$(BIN)/relay serve

# Install and run the test suite (SQLite and the MariaDB on 127.0.0.1:3306).
test: $(STAMP)
	$(BIN)/ruff check relay tests migrations bench
	$(BIN)/mypy relay
	$(BIN)/python -m pytest -m "not slow" -q

# Load and soak tests, bounded in count and time.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)
	$(BIN)/ruff check relay tests migrations bench
	$(BIN)/mypy relay

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
