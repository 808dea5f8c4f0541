# The two commands a new user needs (see README.md). Both set everything up first.
.PHONY: setup demo test test-fast

setup:
	bash scripts/setup.sh

demo:
	bash scripts/setup.sh && .venv/bin/sfr demo

test:
	bash scripts/setup.sh --test && .venv/bin/python -m pytest

test-fast:
	bash scripts/setup.sh && .venv/bin/python -m pytest -m "not slow"
