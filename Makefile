# Entry points; each target does its own set-up (scripts/setup.sh is fast when nothing changed).
.PHONY: setup test demo lint clean

setup:
	scripts/setup.sh

test:
	scripts/test.sh

lint: setup
	. scripts/env.sh && ruff check . && ruff format --check .

clean:
	rm -rf build install log
