# The two README commands are `make demo` and `make test`; everything else is for development.
.PHONY: setup demo test lint codegen bench fraud-production

setup:
	@deploy/bootstrap.sh

demo: setup
	.venv/bin/meshserve demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	deploy/typecheck.sh
	.venv/bin/python proto/codegen.py --check

test: lint
	.venv/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

codegen: setup
	.venv/bin/python proto/codegen.py

bench: setup
	.venv/bin/python -m bench.run_all

# The fraud example on PostgreSQL, Redis, an HTTP risk service and NATS (services must be running).
fraud-production: setup
	.venv/bin/python -m examples.fraud.production
