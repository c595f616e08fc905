# The two commands from the README: `make demo` and `make test`. Everything else is a step of them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
BIN := .venv/bin

.PHONY: bootstrap cluster images demo test lint unit bench down

bootstrap:
	bash devtools/bootstrap.sh

cluster: bootstrap
	$(BIN)/batcomputer-cluster up

images: cluster
	$(BIN)/batcomputer-images build all

demo: images
	$(BIN)/batcomputer-demo

# pytest exits 5 when it collects nothing, so an empty run fails the target too.
# This target brought the cluster up, so the session takes it down again at its end
# (and checks the host is restored): BATCOMPUTER_TEST_TEARDOWN=1.
test: images
	BATCOMPUTER_TEST_TEARDOWN=1 $(BIN)/pytest || { status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	  exit $$status; }

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

unit: bootstrap
	$(BIN)/pytest -m unit

bench: bootstrap
	$(BIN)/python benchmarks/bench_server.py

down:
	$(BIN)/batcomputer-cluster down
