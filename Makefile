# `make test` is the project's test command (README); .ci/run calls exactly it.
PYTHON ?= python3

.PHONY: test install browser demo benchmark

install:
	$(PYTHON) -m pip install --quiet -e ".[test]"

# Debian's chromium for the report's browser test (root only; skipped with a reason otherwise)
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: browser tests will be skipped"; fi

test: install browser
	$(PYTHON) -m pytest

demo: install
	microbleeds detect sample_data -o results --report

benchmark: install
	$(PYTHON) benchmarks/run_speed.py
	$(PYTHON) benchmarks/run_accuracy.py
