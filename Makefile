# scripts/env.sh is a bash file.
SHELL := /bin/bash

# Entry points; each target does its own set-up (scripts/setup.sh is fast when nothing changed).
.PHONY: setup test demo lint clean

setup:
	scripts/setup.sh

test:
	scripts/test.sh

demo: setup
	. scripts/env.sh && python scripts/demo.py

lint: setup
	. scripts/env.sh && ruff check . && ruff format --check .

clean:
	rm -rf build install log
